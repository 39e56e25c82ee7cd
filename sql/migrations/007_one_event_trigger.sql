-- Every image_events row used to look its generation up twice (once to name the canvas node in
-- the NOTIFY payload, once to queue outgoing webhooks). One trigger, one lookup, same effects.

CREATE OR REPLACE FUNCTION imagejobs_events_notify() RETURNS trigger
    LANGUAGE plpgsql
AS $$
DECLARE
    _payload jsonb;
    _generation record;
    _type text;
BEGIN
    SELECT node_id, workflow_id, webhook_url, webhook_events_filter INTO _generation
      FROM image_generations WHERE id = NEW.generation_id;
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
    IF _generation.workflow_id IS NOT NULL THEN
        _payload := _payload || jsonb_build_object('workflow_id', _generation.workflow_id, 'node_id', _generation.node_id);
    END IF;
    IF octet_length(_payload::text) > 7500 THEN
        _payload := (_payload - 'data' - 'label') || '{"truncated": true}';
    END IF;
    PERFORM pg_notify('image_generation_events', _payload::text);

    IF _generation.webhook_url IS NOT NULL THEN
        _type := imagejobs_webhook_type(NEW, _generation.webhook_events_filter);
        IF _type IS NOT NULL THEN
            PERFORM procrastinate_defer_jobs_v1(ARRAY[ROW(
                'webhooks', 'deliver_webhook', 0, NULL, NULL,
                jsonb_build_object('generation_id', NEW.generation_id, 'event_id', NEW.id, 'type', _type),
                NULL
            )::procrastinate_job_to_defer_v1]);
        END IF;
    END IF;
    RETURN NULL;
END;
$$;

DROP TRIGGER image_events_queue_webhook ON image_events;
DROP FUNCTION imagejobs_events_queue_webhook();
