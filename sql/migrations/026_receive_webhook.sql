-- Issue 18: a provider callback is recorded, de-duplicated and its work deferred in one call.
--
-- The handler used to do it in a transaction of five statements (find the generation, insert
-- the delivery, log the event, defer the job, commit), each a round trip holding a pooled
-- connection. One function call is one round trip in autocommit; what it does, and in which
-- order, is unchanged: the delivery is stored first (so a repeat is a `duplicate` whatever
-- else happens), then an unknown job or a finished generation ends it, else the `webhook`
-- event is written under the generation's row lock and `finish_from_webhook` is deferred.
CREATE FUNCTION imagejobs_receive_webhook(
    delivery_id text, provider text, provider_job_id text, payload jsonb, state text
) RETURNS text
    LANGUAGE plpgsql
    SET search_path = public, pg_temp
    AS $$
DECLARE
    _generation image_generations%ROWTYPE;
BEGIN
    SELECT * INTO _generation FROM image_generations g
    WHERE g.provider_job_id = imagejobs_receive_webhook.provider_job_id
    ORDER BY g.created_at DESC LIMIT 1;
    INSERT INTO webhook_deliveries (id, provider, generation_id, payload)
    VALUES (delivery_id, provider, _generation.id, payload)
    ON CONFLICT (id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN 'duplicate';
    END IF;
    IF _generation.id IS NULL THEN
        RETURN 'unknown_job';
    END IF;
    IF _generation.status IN ('completed', 'failed', 'cancelled') THEN
        RETURN 'ignored';
    END IF;
    -- FOR UPDATE: as every writer of a generation's events (sql/queries/events.sql log_event).
    INSERT INTO image_events (generation_id, project_id, workspace_id, kind, status, step, progress, message, data)
    SELECT g.id, g.project_id, g.workspace_id, 'webhook', g.status, g.step, g.progress,
           'Provider callback: ' || state,
           jsonb_build_object('delivery_id', delivery_id, 'state', state)
    FROM image_generations g WHERE g.id = _generation.id
    FOR UPDATE;
    PERFORM procrastinate_defer_jobs_v1(ARRAY[ROW(
        'images', 'finish_from_webhook', 0, NULL, NULL,
        jsonb_build_object('generation_id', _generation.id, 'delivery_id', delivery_id),
        NULL
    )::procrastinate_job_to_defer_v1]);
    RETURN 'accepted';
END;
$$;

REVOKE EXECUTE ON FUNCTION imagejobs_receive_webhook(text, text, text, jsonb, text) FROM PUBLIC;
