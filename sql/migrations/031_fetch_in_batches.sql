-- Issue 18: a worker takes up to `p_max` jobs per round trip (worker/queue/producer.py).
--
-- procrastinate's worker fetches one job per statement, one after another: with thousands of
-- generations queued and slots free, starting them was bounded by that round trip (10,000 in
-- flight took 45 s to start, the worker's CPU a quarter busy). This calls procrastinate's own
-- fetch (with the order and the cap condition of migrations 022 and 029) up to `p_max` times
-- in one statement, so what is taken, and in which order, is what as many single fetches
-- would take. A generation of a workspace with a concurrency cap ends the batch: the cap
-- counts running generations, and the jobs taken before it in the same batch are not running
-- yet, so the next fetch should see it started first (as with single fetches).
CREATE OR REPLACE FUNCTION imagejobs_fetch_jobs(
    target_queue_names character varying[], p_worker_id bigint, p_max integer
)
    RETURNS SETOF procrastinate_jobs
    LANGUAGE plpgsql
    SET search_path TO 'public', 'pg_temp'
AS $$
DECLARE
    _job procrastinate_jobs;
BEGIN
    FOR _ IN 1 .. greatest(p_max, 1) LOOP
        SELECT * INTO _job FROM procrastinate_fetch_job_v2(target_queue_names, p_worker_id);
        EXIT WHEN _job.id IS NULL;
        RETURN NEXT _job;
        EXIT WHEN _job.task_name IN ('generate_image', 'edit_image') AND EXISTS (
            SELECT 1 FROM image_generations g
            JOIN workspace_limits l ON l.workspace_id = g.workspace_id
            WHERE g.id = imagejobs_uuid_or_null(_job.args->>'generation_id')
              AND l.max_concurrency IS NOT NULL
        );
    END LOOP;
END;
$$;

DO $$
DECLARE
    _role text;
BEGIN
    REVOKE EXECUTE ON FUNCTION imagejobs_fetch_jobs(character varying[], bigint, integer) FROM PUBLIC;
    FOREACH _role IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF to_regrole(_role) IS NOT NULL THEN
            EXECUTE format(
                'REVOKE EXECUTE ON FUNCTION imagejobs_fetch_jobs(character varying[], bigint, integer) FROM %I',
                _role);
        END IF;
    END LOOP;
END;
$$;
