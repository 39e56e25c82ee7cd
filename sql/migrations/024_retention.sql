-- Issue 17, part 2: retention. The tables below only grew; `imagejobs_prune` deletes what is
-- older than a retention interval, one small batch per call (worker/queue/retention.py loops
-- it from the periodic task `prune`, or `imagejobs prune`):
--
--   image_events               events older than the interval, of generations that are
--                              finished (completed, failed, cancelled); each generation keeps
--                              its latest state event, the first event its SSE stream sends
--   procrastinate_jobs         finished jobs (succeeded, failed, cancelled, aborted) whose last
--                              event is older than the interval, and with them their
--                              procrastinate_events (ON DELETE CASCADE); never the job of a
--                              generation still pending or processing
--   webhook_deliveries         incoming deliveries received before the interval, unless their
--                              generation is still unfinished (its finish_from_webhook job
--                              reads the delivery); a replay that old fails its signature's
--                              5-minute tolerance anyway
--   outgoing_webhook_attempts  attempts sent before the interval
--
-- and, in queries of their own (sql/queries/retention.sql), the files of old results.
--
-- Each batch is one statement: the candidates, oldest first, by key, with FOR UPDATE SKIP
-- LOCKED (a row some transaction holds is left for the next run, nobody waits on the pruner)
-- and LIMIT batch_size, then a DELETE of those keys. Plain deletes: no rewrite, no lock
-- beyond the rows themselves; autovacuum reuses the space.

-- Results (off unless RETENTION_RESULTS_DAYS is set): finished generations that still have
-- files, oldest first. The files are deleted from storage by the worker (worker/queue/
-- retention.py), then the keys and URLs cleared; the partial index leaves out the rows already
-- done, so the scan does not grow with them.
CREATE INDEX image_generations_files_finished_idx ON image_generations (finished_at)
    WHERE finished_at IS NOT NULL
      AND (result_key IS NOT NULL OR thumbnail_key IS NOT NULL OR mask_key IS NOT NULL);

-- What the candidate scans need: the oldest deliveries first, and where the jobs' scan stops
-- (the first job deferred since the cutoff; procrastinate_events has no index on `at`).
CREATE INDEX webhook_deliveries_received_at_idx ON webhook_deliveries (received_at);
CREATE INDEX imagejobs_procrastinate_deferred_at_idx
    ON procrastinate_events (at) WHERE type = 'deferred';

-- target: image_events, procrastinate_jobs, webhook_deliveries or outgoing_webhook_attempts.
-- Deletes at most batch_size of the target's rows older than older_than and returns how many;
-- with dry_run, deletes nothing and returns how many rows are due now (no limit).
CREATE FUNCTION imagejobs_prune(
    target text, older_than interval, batch_size integer, dry_run boolean DEFAULT false
) RETURNS integer
    LANGUAGE plpgsql VOLATILE
    SET search_path = public, pg_temp
    AS $$
DECLARE
    _cutoff timestamptz := now() - older_than;
    _candidates text;
    _n integer;
BEGIN
    IF older_than IS NULL OR older_than <= interval '0' THEN
        RAISE EXCEPTION 'imagejobs_prune: older_than must be positive, got %', older_than
            USING ERRCODE = '22023';
    END IF;
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'imagejobs_prune: batch_size must be at least 1, got %', batch_size
            USING ERRCODE = '22023';
    END IF;
    -- Each candidate query selects the key `id` of its table, aliased `t`, oldest first; $1 is
    -- the cutoff.
    CASE target
    WHEN 'image_events' THEN
        _candidates := $q$
            SELECT t.id FROM image_events t
            JOIN image_generations g ON g.id = t.generation_id
            WHERE t.ts < $1
              AND g.status IN ('completed', 'failed', 'cancelled')
              AND (t.kind NOT IN ('status', 'progress') OR EXISTS (
                  SELECT 1 FROM image_events n
                  WHERE n.generation_id = t.generation_id AND n.id > t.id
                    AND n.kind IN ('status', 'progress')))
            ORDER BY t.ts, t.id
        $q$;
    WHEN 'procrastinate_jobs' THEN
        -- Job ids follow deferral order and a job finishes after it was deferred, so no job
        -- from the first one deferred since the cutoff on can be due: the scan stops there.
        _candidates := $q$
            SELECT t.id FROM procrastinate_jobs t
            WHERE t.id < coalesce(
                    (SELECT e.job_id FROM procrastinate_events e
                     WHERE e.type = 'deferred' AND e.at >= $1
                     ORDER BY e.at LIMIT 1),
                    9223372036854775807)
              AND t.status IN ('succeeded', 'failed', 'cancelled', 'aborted')
              AND NOT EXISTS (
                  SELECT 1 FROM procrastinate_events e WHERE e.job_id = t.id AND e.at >= $1)
              AND NOT EXISTS (
                  SELECT 1 FROM image_generations g
                  WHERE g.job_id = t.id AND g.status IN ('pending', 'processing'))
            ORDER BY t.id
        $q$;
    WHEN 'webhook_deliveries' THEN
        _candidates := $q$
            SELECT t.id FROM webhook_deliveries t
            LEFT JOIN image_generations g ON g.id = t.generation_id
            WHERE t.received_at < $1
              AND (g.id IS NULL OR g.status IN ('completed', 'failed', 'cancelled'))
            ORDER BY t.received_at, t.id
        $q$;
    WHEN 'outgoing_webhook_attempts' THEN
        _candidates := $q$
            SELECT t.id FROM outgoing_webhook_attempts t
            WHERE t.sent_at < $1
            ORDER BY t.sent_at, t.id
        $q$;
    ELSE
        RAISE EXCEPTION 'imagejobs_prune: nothing to prune in %', target USING ERRCODE = '22023';
    END CASE;
    IF dry_run THEN
        EXECUTE format('SELECT count(*) FROM (%s) c', _candidates) INTO _n USING _cutoff;
    ELSE
        EXECUTE format(
            'WITH doomed AS (%s LIMIT $2 FOR UPDATE OF t SKIP LOCKED), '
            'gone AS (DELETE FROM %I x USING doomed d WHERE x.id = d.id RETURNING 1) '
            'SELECT count(*) FROM gone',
            _candidates, target
        ) INTO _n USING _cutoff, batch_size;
    END IF;
    RETURN _n;
END;
$$;

-- The worker's role runs it (the owner); Supabase's API roles never may.
REVOKE EXECUTE ON FUNCTION imagejobs_prune(text, interval, integer, boolean) FROM PUBLIC;
