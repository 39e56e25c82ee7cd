-- Issue 4: edits run as `edit_image`, a cancel also cancels the provider's job, canvas nodes
-- follow their generation, and outgoing webhooks are queued by the same transaction.

-- Which task runs a generation: edits (metadata.editMode) are inpainting.
CREATE FUNCTION imagejobs_task_for(metadata jsonb) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN metadata ? 'editMode' THEN 'edit_image' ELSE 'generate_image' END
$$;

CREATE OR REPLACE FUNCTION imagejobs_generations_before_insert() RETURNS trigger
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
            NEW.job_id := imagejobs_defer_generation(NEW.id, imagejobs_task_for(NEW.metadata));
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

CREATE OR REPLACE FUNCTION imagejobs_generations_before_update() RETURNS trigger
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
            NEW.provider_job_id := NULL;
            IF OLD.status = 'failed' AND NEW.job_id IS NOT DISTINCT FROM OLD.job_id THEN
                NEW.job_id := imagejobs_defer_generation(NEW.id, imagejobs_task_for(NEW.metadata));
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

-- The notification also names the canvas node, so workflow streams need no lookup.
CREATE OR REPLACE FUNCTION imagejobs_events_notify() RETURNS trigger
    LANGUAGE plpgsql
AS $$
DECLARE
    _payload jsonb;
    _node record;
BEGIN
    SELECT node_id, workflow_id INTO _node FROM image_generations WHERE id = NEW.generation_id;
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
    IF _node.workflow_id IS NOT NULL THEN
        _payload := _payload || jsonb_build_object('workflow_id', _node.workflow_id, 'node_id', _node.node_id);
    END IF;
    IF octet_length(_payload::text) > 7500 THEN
        _payload := (_payload - 'data' - 'label') || '{"truncated": true}';
    END IF;
    PERFORM pg_notify('image_generation_events', _payload::text);
    RETURN NULL;
END;
$$;

-- Canvas nodes: on every status (or result) change, merge {imageUrl, status, error, updatedAt}
-- into the node's data, in the same transaction, leaving its other keys alone.
CREATE FUNCTION imagejobs_generations_sync_node() RETURNS trigger
    LANGUAGE plpgsql
AS $$
DECLARE
    _patch jsonb;
BEGIN
    IF NEW.node_id IS NULL OR NEW.workflow_id IS NULL THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.status = OLD.status
       AND NEW.result_image_url IS NOT DISTINCT FROM OLD.result_image_url THEN
        RETURN NULL;
    END IF;
    _patch := jsonb_build_object(
        'imageUrl', NEW.result_image_url,
        'status', NEW.status,
        'error', NEW.error_message,
        'generationId', NEW.id,
        'updatedAt', to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
    );
    INSERT INTO workflow_nodes (id, workflow_id, workspace_id, node_type, node_data)
    VALUES (NEW.node_id, NEW.workflow_id, NEW.workspace_id, 'image', _patch)
    ON CONFLICT (workflow_id, id) DO UPDATE
        SET node_data = workflow_nodes.node_data || excluded.node_data,
            updated_at = now()
        WHERE workflow_nodes.workspace_id IS NOT DISTINCT FROM excluded.workspace_id;
    RETURN NULL;
END;
$$;

CREATE TRIGGER image_generations_sync_node
    AFTER INSERT OR UPDATE ON image_generations
    FOR EACH ROW EXECUTE FUNCTION imagejobs_generations_sync_node();

-- Outgoing webhooks: every attempt of every delivery, with the receiver's answer.
CREATE TABLE outgoing_webhook_attempts (
    id bigserial PRIMARY KEY,
    generation_id uuid NOT NULL REFERENCES image_generations (id) ON DELETE CASCADE,
    event_id bigint NOT NULL,
    message_id text NOT NULL,
    type text NOT NULL,
    attempt integer NOT NULL,
    status_code integer NULL,
    error text NULL,
    sent_at timestamptz NOT NULL DEFAULT now(),
    duration_ms integer NULL
);
CREATE INDEX outgoing_webhook_attempts_generation_idx ON outgoing_webhook_attempts (generation_id, id);

-- The outgoing webhook type of an event, or NULL when the generation did not ask for it.
CREATE FUNCTION imagejobs_webhook_type(event image_events, webhook_filter text[]) RETURNS text
    LANGUAGE sql IMMUTABLE
AS $$
    SELECT CASE
        WHEN event.kind = 'status' AND event.status = 'processing' AND event.step = 'fetching'
             AND 'start' = ANY (coalesce(webhook_filter, ARRAY['start', 'progress', 'completed']))
            THEN 'generation.started'
        WHEN event.kind = 'progress'
             AND 'progress' = ANY (coalesce(webhook_filter, ARRAY['start', 'progress', 'completed']))
            THEN 'generation.progress'
        WHEN event.kind = 'status' AND event.status IN ('completed', 'failed', 'cancelled')
             AND 'completed' = ANY (coalesce(webhook_filter, ARRAY['start', 'progress', 'completed']))
            THEN 'generation.' || event.status
    END
$$;

CREATE FUNCTION imagejobs_events_queue_webhook() RETURNS trigger
    LANGUAGE plpgsql
AS $$
DECLARE
    _generation record;
    _type text;
BEGIN
    SELECT webhook_url, webhook_events_filter INTO _generation
      FROM image_generations WHERE id = NEW.generation_id;
    IF _generation.webhook_url IS NULL THEN
        RETURN NULL;
    END IF;
    _type := imagejobs_webhook_type(NEW, _generation.webhook_events_filter);
    IF _type IS NOT NULL THEN
        PERFORM procrastinate_defer_jobs_v1(ARRAY[ROW(
            'webhooks', 'deliver_webhook', 0, NULL, NULL,
            jsonb_build_object('generation_id', NEW.generation_id, 'event_id', NEW.id, 'type', _type),
            NULL
        )::procrastinate_job_to_defer_v1]);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER image_events_queue_webhook
    AFTER INSERT ON image_events
    FOR EACH ROW EXECUTE FUNCTION imagejobs_events_queue_webhook();

-- Generic provider callbacks name the job by provider_job_id alone.
CREATE INDEX image_generations_provider_job_id_idx
    ON image_generations (provider_job_id) WHERE provider_job_id IS NOT NULL;
