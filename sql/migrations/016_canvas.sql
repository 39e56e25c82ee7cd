-- Issue 15: the canvas and retries as the source documents mean them.
--
-- * Versions: one history per root (`coalesce(parent_id, id)`), numbered by the database under a
--   per-root lock and held unique, so concurrent edits and regenerates get 2, 3, 4, ...
-- * Node rules: a node keeps its last good image until a newer generation completes; news of a
--   generation older than the node's current one never lands; a failure sets `status: error`
--   and an `error` object (code, message, resolution) and keeps the image; `status` speaks the
--   canvas's four words. A newer generation on a node supersedes (cancels) older unfinished ones.
-- * Retries: failed and cancelled generations go back to pending with a fresh attempt budget.
-- * Every error code has a resolution (`error_resolution`, computed from `error_code`).
-- * Results get a thumbnail (`thumbnail_url`).

ALTER TABLE image_generations
    ADD COLUMN thumbnail_url text
        CONSTRAINT image_generations_thumbnail_url_http CHECK (imagejobs_is_http_url(thumbnail_url));

-- What to do about each catalogue error (the status document's wording where it gives one). The
-- same table is worker/core/errors.py's RESOLUTIONS; tests/sql/test_canvas.py holds them equal.
CREATE FUNCTION imagejobs_error_resolution(code text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT CASE code
        WHEN 'not_found' THEN 'Verify the image id is correct.'
        WHEN 'source_unreachable' THEN 'Check that the image was uploaded successfully to storage and that its URL is public.'
        WHEN 'no_result' THEN 'This may be due to content safety filters or invalid input. Check the prompt and image content.'
        WHEN 'content_policy' THEN 'Try a different prompt: the provider''s safety system refused this one.'
        WHEN 'result_unreachable' THEN 'This is usually temporary. Retry the processing.'
        WHEN 'provider_error' THEN 'Check logs for more details. May be due to API rate limits or service issues; retry in a few minutes.'
        WHEN 'timeout' THEN 'The job took too long or its worker stopped repeatedly. Retry it; if it keeps timing out, try a smaller size or another model.'
        WHEN 'mask_missing' THEN 'Provide a valid base64-encoded mask image.'
        WHEN 'mask_invalid' THEN 'Ensure the mask is a PNG sent as a base64 data URL of type image/png.'
        WHEN 'source_unreadable' THEN 'Ensure the source image is a valid PNG, JPEG or WebP file within the size limit.'
        WHEN 'storage_error' THEN 'This is usually temporary. Retry the processing; if it keeps failing, check that the storage bucket exists and accepts uploads.'
        WHEN 'cancelled' THEN 'Retry or regenerate to run it again.'
        WHEN 'model_unavailable' THEN 'Choose another model: GET /v1/models lists what each provider serves.'
    END
    $$;

ALTER TABLE image_generations
    ADD COLUMN error_resolution text GENERATED ALWAYS AS (imagejobs_error_resolution(error_code)) STORED;

-- Versions: renumber any history the old unlocked max(version)+1 left with duplicates, then
-- hold them unique.
WITH ranked AS (
    SELECT id, row_number() OVER (
        PARTITION BY coalesce(parent_id, id) ORDER BY version, created_at, id
    )::int AS version
    FROM image_generations
)
UPDATE image_generations g SET version = ranked.version
FROM ranked WHERE g.id = ranked.id AND g.version <> ranked.version;

CREATE UNIQUE INDEX image_generations_root_version_key
    ON image_generations ((coalesce(parent_id, id)), version);
CREATE INDEX image_generations_node_idx
    ON image_generations (workflow_id, node_id) WHERE node_id IS NOT NULL;

CREATE FUNCTION imagejobs_generations_assign_version() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = public, pg_temp
    AS $$
BEGIN
    IF NEW.parent_id IS NULL THEN
        NEW.version := 1;
        RETURN NEW;
    END IF;
    -- One writer per history at a time; the next statement's snapshot sees the previous one's row.
    PERFORM pg_advisory_xact_lock(hashtextextended('imagejobs.versions:' || NEW.parent_id::text, 0));
    NEW.version := coalesce((
        SELECT max(version) FROM image_generations
        WHERE id = NEW.parent_id OR parent_id = NEW.parent_id
    ), 1) + 1;
    RETURN NEW;
END;
$$;

CREATE TRIGGER image_generations_assign_version BEFORE INSERT ON image_generations
    FOR EACH ROW EXECUTE FUNCTION imagejobs_generations_assign_version();

-- Retry from failed or cancelled, with a fresh attempt budget (the same from psql:
-- UPDATE image_generations SET status = 'pending' WHERE id = ...).
CREATE OR REPLACE FUNCTION imagejobs_generations_before_update() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = public, pg_temp
    AS $$
BEGIN
    IF NEW.project_id IS DISTINCT FROM OLD.project_id
       AND NOT EXISTS (SELECT 1 FROM projects WHERE id = NEW.project_id AND workspace_id = NEW.workspace_id) THEN
        RAISE check_violation USING
            MESSAGE = 'a generation can only move to a project of its own workspace',
            COLUMN = 'project_id';
    END IF;

    IF NEW.status IS DISTINCT FROM OLD.status THEN
        IF NOT (
            (OLD.status = 'pending' AND NEW.status IN ('processing', 'failed', 'cancelled'))
            OR (OLD.status = 'processing' AND NEW.status IN ('completed', 'failed', 'cancelled', 'pending'))
            OR (OLD.status IN ('failed', 'cancelled') AND NEW.status = 'pending')
        ) THEN
            RAISE check_violation USING
                MESSAGE = format('invalid status transition %s -> %s', OLD.status, NEW.status),
                COLUMN = 'status';
        END IF;

        CASE NEW.status
        WHEN 'processing' THEN
            NEW.started_at := coalesce(NEW.started_at, now());
        WHEN 'pending' THEN
            NEW.step := 'queued';
            NEW.progress := 0;
            NEW.error_code := NULL;
            NEW.error_message := NULL;
            NEW.result_image_url := NULL;
            NEW.thumbnail_url := NULL;
            NEW.finished_at := NULL;
            NEW.provider_job_id := NULL;
            IF OLD.status IN ('failed', 'cancelled') THEN
                -- A retry: a fresh attempt budget and, unless the writer brought one, a new job.
                NEW.attempts := 0;
                NEW.started_at := NULL;
                IF NEW.job_id IS NOT DISTINCT FROM OLD.job_id THEN
                    NEW.job_id := imagejobs_defer_generation(NEW.id, imagejobs_task_for(NEW.edit_mode));
                END IF;
            END IF;
        WHEN 'completed' THEN
            NEW.step := 'completed';
            NEW.progress := 100;
            NEW.error_code := NULL;
            NEW.error_message := NULL;
            NEW.finished_at := now();
        WHEN 'failed' THEN
            NEW.step := 'failed';
            NEW.error_code := coalesce(NEW.error_code, 'provider_error');
            NEW.finished_at := now();
        WHEN 'cancelled' THEN
            NEW.step := 'cancelled';
            NEW.error_code := 'cancelled';
            NEW.error_message := coalesce(NEW.error_message, 'Cancelled');
            NEW.finished_at := now();
            IF OLD.job_id IS NOT NULL THEN
                -- todo -> cancelled (never runs); doing -> abort requested (the worker stops it)
                PERFORM procrastinate_cancel_job_v1(OLD.job_id, true, false);
            END IF;
            IF OLD.provider_job_id IS NOT NULL THEN
                -- The provider may still be working for us: ask it to stop (a job of its own,
                -- since the cancelled job will not run).
                PERFORM procrastinate_defer_jobs_v1(ARRAY[ROW(
                    'images', 'cancel_provider_job', 0, NULL, NULL,
                    jsonb_build_object('generation_id', NEW.id), NULL
                )::procrastinate_job_to_defer_v1]);
            END IF;
        END CASE;
    END IF;

    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

CREATE FUNCTION imagejobs_uuid_or_null(value text) RETURNS uuid
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT CASE WHEN value ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                THEN value::uuid END
    $$;

-- The canvas's four words for a generation's status.
CREATE FUNCTION imagejobs_node_status(status text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT CASE status
        WHEN 'pending' THEN 'pending'
        WHEN 'processing' THEN 'running'
        WHEN 'completed' THEN 'completed'
        ELSE 'error'
    END
    $$;

ALTER TABLE workflow_nodes ALTER COLUMN node_type SET DEFAULT 'image_generation';
-- 'image' was only ever this trigger's default.
UPDATE workflow_nodes SET node_type = 'image_generation' WHERE node_type = 'image';

CREATE OR REPLACE FUNCTION imagejobs_generations_sync_node() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = public, pg_temp
    AS $$
DECLARE
    _patch jsonb;
BEGIN
    IF NEW.node_id IS NULL OR NEW.workflow_id IS NULL THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.status = OLD.status
       AND NEW.result_image_url IS NOT DISTINCT FROM OLD.result_image_url
       AND NEW.thumbnail_url IS NOT DISTINCT FROM OLD.thumbnail_url THEN
        RETURN NULL;
    END IF;
    _patch := jsonb_build_object(
        'status', imagejobs_node_status(NEW.status),
        'generationId', NEW.id,
        'version', NEW.version,
        'error', CASE WHEN NEW.status IN ('failed', 'cancelled') THEN jsonb_build_object(
            'code', NEW.error_code,
            'message', NEW.error_message,
            'resolution', NEW.error_resolution
        ) END,
        'updatedAt', to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
    );
    -- The image changes only when a result lands; until then the node keeps its last good one.
    IF NEW.status = 'completed' THEN
        _patch := _patch || jsonb_build_object(
            'imageUrl', NEW.result_image_url, 'thumbnailUrl', NEW.thumbnail_url
        );
    END IF;
    -- A new generation becomes the node's current one; a change of any other generation lands
    -- only while it is still current (or the current one is gone). The check runs on the locked
    -- row (ON CONFLICT ... WHERE), so it cannot interleave with a newer generation's insert.
    INSERT INTO workflow_nodes (id, workflow_id, workspace_id, node_type, node_data)
    VALUES (NEW.node_id, NEW.workflow_id, NEW.workspace_id, 'image_generation', _patch)
    ON CONFLICT (workflow_id, id) DO UPDATE
        SET node_data = workflow_nodes.node_data || excluded.node_data,
            updated_at = now()
        WHERE workflow_nodes.workspace_id IS NOT DISTINCT FROM excluded.workspace_id
          AND (
              TG_OP = 'INSERT'
              OR workflow_nodes.node_data->>'generationId' IS NULL
              OR workflow_nodes.node_data->>'generationId' = NEW.id::text
              OR NOT EXISTS (
                  SELECT 1 FROM image_generations current
                  WHERE current.id = imagejobs_uuid_or_null(workflow_nodes.node_data->>'generationId')
              )
          );
    IF TG_OP = 'INSERT' AND NEW.status IN ('pending', 'processing') THEN
        -- The newer generation supersedes older unfinished work on the node, provider work
        -- included (the cancel trigger asks the provider to stop).
        UPDATE image_generations
        SET status = 'cancelled', error_message = format('Superseded by generation %s on node %s', NEW.id, NEW.node_id)
        WHERE workflow_id = NEW.workflow_id AND node_id = NEW.node_id
          AND workspace_id = NEW.workspace_id AND id <> NEW.id
          AND status IN ('pending', 'processing');
    END IF;
    RETURN NULL;
END;
$$;

-- Events carry the resolution and the thumbnail, so streams and webhooks show them.
CREATE OR REPLACE FUNCTION imagejobs_generations_record_event() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = public, pg_temp
    AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND NEW.status = OLD.status AND NEW.step = OLD.step AND NEW.progress = OLD.progress THEN
        RETURN NULL;
    END IF;
    INSERT INTO image_events (generation_id, project_id, workspace_id, kind, status, step, progress, message, data)
    VALUES (
        NEW.id, NEW.project_id, NEW.workspace_id,
        CASE WHEN TG_OP = 'INSERT' OR NEW.status <> OLD.status THEN 'status' ELSE 'progress' END,
        NEW.status, NEW.step, NEW.progress,
        imagejobs_step_label(NEW.step),
        jsonb_strip_nulls(jsonb_build_object(
            'result_image_url', NEW.result_image_url,
            'thumbnail_url', NEW.thumbnail_url,
            'error_code', NEW.error_code,
            'error_message', left(NEW.error_message, 1000),
            'error_resolution', NEW.error_resolution,
            'attempts', NEW.attempts,
            'version', NEW.version
        ))
    );
    RETURN NULL;
END;
$$;
