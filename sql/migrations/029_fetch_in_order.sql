-- Issue 18: procrastinate's fetch walks the queue in order and stops at the first job it may
-- take, instead of filtering the whole queue first.
--
-- The fetch of migration 022 is procrastinate's one query plus the concurrency-cap condition.
-- With a burst of work queued and statistics not yet refreshed (the common case right after a
-- bulk insert: autovacuum analyses a minute later), Postgres planned it as a scan of every
-- queued job, each probed for a same-lock job and for its workspace's cap, then sorted:
-- measured, 132 ms per fetch with 2,000 queued, so a worker started only a few jobs a second.
-- Here the candidates come from procrastinate's own (priority DESC, id) index, in that order,
-- and each is checked, then locked (SKIP LOCKED, status re-checked under the lock), until one
-- is taken: the work per fetch is the jobs ahead that cannot run, not the queue's length.
-- What is taken is unchanged: the first job in priority order that is todo, due, not behind a
-- job of its lock and not of a capped workspace at its cap; jobs other workers hold are skipped.
CREATE OR REPLACE FUNCTION procrastinate_fetch_job_v2(
    target_queue_names character varying[],
    p_worker_id bigint
)
    RETURNS procrastinate_jobs
    LANGUAGE plpgsql
AS $$
DECLARE
    _candidate record;
    found_jobs procrastinate_jobs;
BEGIN
    FOR _candidate IN
        SELECT jobs.id, jobs.lock, jobs.priority, jobs.task_name, jobs.args
        FROM procrastinate_jobs AS jobs
        WHERE jobs.status = 'todo'
          AND (target_queue_names IS NULL OR jobs.queue_name = ANY (target_queue_names))
          AND (jobs.scheduled_at IS NULL OR jobs.scheduled_at <= now())
        ORDER BY jobs.priority DESC, jobs.id ASC
    LOOP
        -- reject the job if its lock has earlier or higher priority jobs (procrastinate's rule)
        CONTINUE WHEN _candidate.lock IS NOT NULL AND EXISTS (
            SELECT 1
            FROM procrastinate_jobs AS other_jobs
            WHERE other_jobs.lock = _candidate.lock
              AND (
                  other_jobs.status = 'doing'
                  OR (
                      other_jobs.status = 'todo'
                      AND (
                          other_jobs.priority > _candidate.priority
                          OR (other_jobs.priority = _candidate.priority AND other_jobs.id < _candidate.id)
                      )
                  )
              )
        );
        -- imagejobs (sql/migrations/022): a generation run of a workspace at its
        -- max_concurrency waits, and the next job in order is taken instead.
        CONTINUE WHEN _candidate.task_name IN ('generate_image', 'edit_image')
            AND NOT imagejobs_may_start(imagejobs_uuid_or_null(_candidate.args->>'generation_id'));
        UPDATE procrastinate_jobs
            SET status = 'doing', worker_id = p_worker_id
            WHERE id = (
                SELECT locked.id FROM procrastinate_jobs AS locked
                WHERE locked.id = _candidate.id AND locked.status = 'todo'
                FOR UPDATE SKIP LOCKED
            )
            RETURNING procrastinate_jobs.* INTO found_jobs;
        IF found_jobs.id IS NOT NULL THEN
            RETURN found_jobs;
        END IF;
    END LOOP;
    RETURN found_jobs;
END;
$$;
