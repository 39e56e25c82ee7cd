-- Issue 18: the fetch of migration 029 reads the queue a page at a time.
--
-- 029 meant the fetch to walk procrastinate's (priority DESC, id) index and stop at the first
-- job it may take. But a plpgsql FOR loop is planned for reading every row of its query, and
-- for every row Postgres prefers a bitmap scan of the whole queue and a sort: measured, with
-- 8,000 jobs queued (statistics fresh or not), 4-6 ms per fetch, so a worker with 10,000 free
-- slots started about 250 jobs a second, the fetch's one backend at 100% of a core. Asking
-- for a page of PAGE candidates (LIMIT) is planned as the index walk it is; the next page
-- starts after the last candidate seen, so a queue whose head cannot run (jobs behind their
-- lock, workspaces at their cap) is still walked to its end, as before.
-- The lock rule's probe for a job of the same lock was answered by procrastinate's (id, lock)
-- index, lock second: a scan of every queued and running job's entry, about 0.7 ms per
-- candidate at 10,000. It is two probes now, one of procrastinate's (lock) index of running
-- jobs, one of an index of queued jobs' locks added here.
-- What is taken is unchanged: the first job in priority order that is todo, due, not behind a
-- job of its lock and not of a capped workspace at its cap; jobs other workers hold are skipped.
CREATE OR REPLACE FUNCTION procrastinate_fetch_job_v2(
    target_queue_names character varying[],
    p_worker_id bigint
)
    RETURNS procrastinate_jobs
    LANGUAGE plpgsql
    -- The plan of a page is made once per session and kept: in a worker started on an empty
    -- queue it was made for a table of one row, as a scan of every queued job and a sort (a
    -- burst of 10,000 then cost 4-6 ms a fetch until the session ended). Without sorts the
    -- only plan left is the index walk, whatever the statistics said when it was made.
    SET enable_sort = off
AS $$
DECLARE
    page constant integer := 20;
    _candidate record;
    _seen integer;
    _after_priority integer;
    _after_id bigint;
    found_jobs procrastinate_jobs;
BEGIN
    LOOP
        _seen := 0;
        FOR _candidate IN
            SELECT jobs.id, jobs.lock, jobs.priority, jobs.task_name, jobs.args
            FROM procrastinate_jobs AS jobs
            WHERE jobs.status = 'todo'
              AND (target_queue_names IS NULL OR jobs.queue_name = ANY (target_queue_names))
              AND (jobs.scheduled_at IS NULL OR jobs.scheduled_at <= now())
              AND (_after_id IS NULL
                   OR jobs.priority < _after_priority
                   OR (jobs.priority = _after_priority AND jobs.id > _after_id))
            ORDER BY jobs.priority DESC, jobs.id ASC
            LIMIT page
        LOOP
            _seen := _seen + 1;
            _after_priority := _candidate.priority;
            _after_id := _candidate.id;
            -- reject the job if its lock has a running job, or an earlier or higher priority
            -- one queued (procrastinate's rule; two probes, each answered by a partial index)
            CONTINUE WHEN _candidate.lock IS NOT NULL AND (
                EXISTS (
                    SELECT 1 FROM procrastinate_jobs AS other_jobs
                    WHERE other_jobs.lock = _candidate.lock AND other_jobs.status = 'doing'
                )
                OR EXISTS (
                    SELECT 1 FROM procrastinate_jobs AS other_jobs
                    WHERE other_jobs.lock = _candidate.lock AND other_jobs.status = 'todo'
                      AND (
                          other_jobs.priority > _candidate.priority
                          OR (other_jobs.priority = _candidate.priority AND other_jobs.id < _candidate.id)
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
        EXIT WHEN _seen < page;
    END LOOP;
    RETURN found_jobs;
END;
$$;

CREATE INDEX IF NOT EXISTS imagejobs_jobs_queued_lock_idx
    ON procrastinate_jobs (lock) WHERE status = 'todo' AND lock IS NOT NULL;
