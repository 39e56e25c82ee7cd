-- The lifecycle every writer gets, whether it is the API, the worker or a person with psql:
-- enqueue on insert, guarded status transitions, cancel, image_events, NOTIFY, O(1) counters.

CREATE FUNCTION imagejobs_step_label(step text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE step
        WHEN 'queued' THEN 'Waiting in queue'
        WHEN 'fetching' THEN 'Loading image record from database'
        WHEN 'uploading' THEN 'Preparing image for AI processing'
        WHEN 'preparing' THEN 'Processing and resizing mask to match image dimensions'
        WHEN 'processing' THEN 'AI model is generating the image'
        WHEN 'saving' THEN 'Downloading and storing result'
        WHEN 'completed' THEN 'Processing finished successfully'
        WHEN 'failed' THEN 'Processing failed'
        WHEN 'cancelled' THEN 'Cancelled'
    END
$$;

CREATE FUNCTION imagejobs_default_model(provider text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE provider
        WHEN 'local' THEN 'pillow-v1'
        WHEN 'openai' THEN 'gpt-image-1'
        WHEN 'google' THEN 'gemini-2.5-flash-image'
        WHEN 'fal' THEN 'fal-ai/flux/dev'
    END
$$;

-- base_prompt followed by the style modifiers: what a provider is asked for.
CREATE FUNCTION imagejobs_compose_prompt(spec jsonb) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT NULLIF(concat_ws(', ',
        NULLIF(btrim(spec->>'base_prompt'), ''),
        (SELECT NULLIF(string_agg(btrim(m), ', '), '')
           FROM jsonb_array_elements_text(
               CASE WHEN jsonb_typeof(spec->'style_modifiers') = 'array'
                    THEN spec->'style_modifiers' ELSE '[]'::jsonb END) AS m
          WHERE btrim(m) <> '')
    ), '')
$$;

-- Project status over its non-cancelled images (CONTRACT section 3).
CREATE FUNCTION imagejobs_project_status(pending integer, processing integer, completed integer, failed integer)
    RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE
        WHEN pending + processing + completed + failed = pending THEN 'pending'
        WHEN completed = pending + processing + completed + failed THEN 'completed'
        WHEN completed + failed = pending + processing + completed + failed THEN 'failed'
        ELSE 'processing'
    END
$$;

-- Enqueues the procrastinate job that runs a generation. The lock keeps two jobs of the same
-- generation from ever running at once.
CREATE FUNCTION imagejobs_defer_generation(generation_id uuid, task_name text) RETURNS bigint
    LANGUAGE sql VOLATILE
AS $$
    SELECT (procrastinate_defer_jobs_v1(ARRAY[ROW(
        'images', task_name, 0, 'generation:' || generation_id::text, NULL,
        jsonb_build_object('generation_id', generation_id), NULL
    )::procrastinate_job_to_defer_v1]))[1]
$$;

CREATE FUNCTION imagejobs_generations_before_insert() RETURNS trigger
    LANGUAGE plpgsql
AS $$
DECLARE
    _workspace_id uuid;
BEGIN
    SELECT workspace_id INTO _workspace_id FROM projects WHERE id = NEW.project_id;
    IF NOT FOUND THEN
        RAISE foreign_key_violation USING
            MESSAGE = format('project %s does not exist', NEW.project_id),
            COLUMN = 'project_id';
    END IF;
    IF NEW.workspace_id IS NULL THEN
        NEW.workspace_id := _workspace_id;
    ELSIF NEW.workspace_id <> _workspace_id THEN
        RAISE check_violation USING
            MESSAGE = 'workspace_id does not match the project''s workspace',
            COLUMN = 'workspace_id';
    END IF;

    NEW.prompt := coalesce(NULLIF(btrim(NEW.prompt), ''), imagejobs_compose_prompt(NEW.prompt_spec));
    IF NEW.model IS NULL OR NEW.model = '' THEN
        NEW.model := imagejobs_default_model(NEW.provider);
    END IF;
    IF NOT NEW.metadata ? 'model' THEN
        NEW.metadata := NEW.metadata || jsonb_build_object('model', NEW.provider || ':' || NEW.model);
    END IF;

    IF NEW.status = 'pending' THEN
        NEW.step := 'queued';
        NEW.progress := 0;
        IF NEW.job_id IS NULL THEN
            NEW.job_id := imagejobs_defer_generation(NEW.id, 'generate_image');
        END IF;
    ELSIF NEW.status IN ('completed', 'failed', 'cancelled') THEN
        NEW.step := NEW.status;
        NEW.finished_at := coalesce(NEW.finished_at, now());
        IF NEW.status = 'completed' THEN
            NEW.progress := 100;
        END IF;
    END IF;
    RETURN NEW;
END;
$$;

CREATE FUNCTION imagejobs_generations_before_update() RETURNS trigger
    LANGUAGE plpgsql
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
            OR (OLD.status = 'failed' AND NEW.status = 'pending')
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
            NEW.finished_at := NULL;
            -- A retry of a failed generation runs as a new job; a re-queued processing one
            -- (stall recovery) keeps the job its recoverer re-queued.
            IF OLD.status = 'failed' AND NEW.job_id IS NOT DISTINCT FROM OLD.job_id THEN
                NEW.job_id := imagejobs_defer_generation(NEW.id, 'generate_image');
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
        END CASE;
    END IF;

    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

-- One image_events row per change of status, step or progress.
CREATE FUNCTION imagejobs_generations_record_event() RETURNS trigger
    LANGUAGE plpgsql
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
            'error_code', NEW.error_code,
            'error_message', left(NEW.error_message, 1000),
            'attempts', NEW.attempts,
            'version', NEW.version
        ))
    );
    RETURN NULL;
END;
$$;

CREATE FUNCTION imagejobs_events_notify() RETURNS trigger
    LANGUAGE plpgsql
AS $$
DECLARE
    _payload jsonb;
BEGIN
    _payload := jsonb_build_object(
        'event_id', NEW.id,
        'generation_id', NEW.generation_id,
        'project_id', NEW.project_id,
        'workspace_id', NEW.workspace_id,
        'kind', NEW.kind,
        'status', NEW.status,
        'step', NEW.step,
        'progress', NEW.progress,
        'label', left(NEW.message, 500),
        'ts', to_char(NEW.ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'data', NEW.data
    );
    IF octet_length(_payload::text) > 7500 THEN
        -- NOTIFY payloads are capped at 8000 bytes; subscribers re-read the row when truncated.
        _payload := (_payload - 'data' - 'label') || '{"truncated": true}';
    END IF;
    PERFORM pg_notify('image_generation_events', _payload::text);
    RETURN NULL;
END;
$$;

-- Moves one image between counter buckets of a project (either side may be NULL). One UPDATE,
-- no COUNT: the projects trigger below derives image_count and status, and notifies.
CREATE FUNCTION imagejobs_shift_counts(project uuid, from_status text, to_status text) RETURNS void
    LANGUAGE sql VOLATILE
AS $$
    UPDATE projects SET
        pending_count = pending_count
            + coalesce((to_status = 'pending')::int, 0) - coalesce((from_status = 'pending')::int, 0),
        processing_count = processing_count
            + coalesce((to_status = 'processing')::int, 0) - coalesce((from_status = 'processing')::int, 0),
        completed_count = completed_count
            + coalesce((to_status = 'completed')::int, 0) - coalesce((from_status = 'completed')::int, 0),
        failed_count = failed_count
            + coalesce((to_status = 'failed')::int, 0) - coalesce((from_status = 'failed')::int, 0),
        cancelled_count = cancelled_count
            + coalesce((to_status = 'cancelled')::int, 0) - coalesce((from_status = 'cancelled')::int, 0)
    WHERE id = project
$$;

CREATE FUNCTION imagejobs_generations_count() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM imagejobs_shift_counts(NEW.project_id, NULL, NEW.status);
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM imagejobs_shift_counts(OLD.project_id, OLD.status, NULL);
    ELSIF NEW.project_id <> OLD.project_id THEN
        PERFORM imagejobs_shift_counts(OLD.project_id, OLD.status, NULL);
        PERFORM imagejobs_shift_counts(NEW.project_id, NULL, NEW.status);
    ELSIF NEW.status <> OLD.status THEN
        PERFORM imagejobs_shift_counts(NEW.project_id, OLD.status, NEW.status);
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION imagejobs_projects_before_update() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    NEW.image_count := NEW.pending_count + NEW.processing_count + NEW.completed_count + NEW.failed_count;
    NEW.status := imagejobs_project_status(
        NEW.pending_count, NEW.processing_count, NEW.completed_count, NEW.failed_count);
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

CREATE FUNCTION imagejobs_projects_notify() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND (NEW.status, NEW.image_count, NEW.pending_count, NEW.processing_count,
                             NEW.completed_count, NEW.failed_count, NEW.cancelled_count)
        IS NOT DISTINCT FROM (OLD.status, OLD.image_count, OLD.pending_count, OLD.processing_count,
                              OLD.completed_count, OLD.failed_count, OLD.cancelled_count) THEN
        RETURN NULL;
    END IF;
    PERFORM pg_notify('project_status', jsonb_build_object(
        'project_id', NEW.id,
        'workspace_id', NEW.workspace_id,
        'status', NEW.status,
        'image_count', NEW.image_count,
        'pending_count', NEW.pending_count,
        'processing_count', NEW.processing_count,
        'completed_count', NEW.completed_count,
        'failed_count', NEW.failed_count,
        'cancelled_count', NEW.cancelled_count,
        'updated_at', NEW.updated_at
    )::text);
    RETURN NULL;
END;
$$;

-- Rebuilds a project's counters from its rows; the O(1) deltas must always agree with it.
CREATE FUNCTION recompute_project_counts(project_id uuid) RETURNS projects
    LANGUAGE sql VOLATILE
AS $$
    UPDATE projects p SET
        pending_count = c.pending,
        processing_count = c.processing,
        completed_count = c.completed,
        failed_count = c.failed,
        cancelled_count = c.cancelled
    FROM (
        SELECT count(*) FILTER (WHERE status = 'pending') AS pending,
               count(*) FILTER (WHERE status = 'processing') AS processing,
               count(*) FILTER (WHERE status = 'completed') AS completed,
               count(*) FILTER (WHERE status = 'failed') AS failed,
               count(*) FILTER (WHERE status = 'cancelled') AS cancelled
          FROM image_generations g
         WHERE g.project_id = recompute_project_counts.project_id
    ) c
    WHERE p.id = recompute_project_counts.project_id
    RETURNING p.*
$$;

CREATE TRIGGER image_generations_before_insert
    BEFORE INSERT ON image_generations
    FOR EACH ROW EXECUTE FUNCTION imagejobs_generations_before_insert();
CREATE TRIGGER image_generations_before_update
    BEFORE UPDATE ON image_generations
    FOR EACH ROW EXECUTE FUNCTION imagejobs_generations_before_update();
CREATE TRIGGER image_generations_record_event
    AFTER INSERT OR UPDATE ON image_generations
    FOR EACH ROW EXECUTE FUNCTION imagejobs_generations_record_event();
CREATE TRIGGER image_generations_count
    AFTER INSERT OR DELETE OR UPDATE ON image_generations
    FOR EACH ROW EXECUTE FUNCTION imagejobs_generations_count();
CREATE TRIGGER image_events_notify
    AFTER INSERT ON image_events
    FOR EACH ROW EXECUTE FUNCTION imagejobs_events_notify();
CREATE TRIGGER projects_before_update
    BEFORE UPDATE ON projects
    FOR EACH ROW EXECUTE FUNCTION imagejobs_projects_before_update();
CREATE TRIGGER projects_notify
    AFTER INSERT OR UPDATE ON projects
    FOR EACH ROW EXECUTE FUNCTION imagejobs_projects_notify();
