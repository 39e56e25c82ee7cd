-- Named queries that defer procrastinate jobs directly (not through a generation's triggers).
-- Each starts with "-- name: <name>", unique across sql/queries/; parameters are psycopg
-- named placeholders. Nothing here is a migration.

-- name: jobs_of_absent_workers
-- `doing` jobs on the given queues whose worker's presence lock is not held in this database
-- (worker/queue/presence.py: two-key advisory lock, classid = namespace, objid = worker id):
-- the session that held it has ended, so the worker is gone. Nothing in the first settle_s
-- after Postgres started, while every worker is still taking its lock again. With job_ids, only
-- those (the rescuer's second look, under FOR UPDATE so two rescuers never re-queue one job).
SELECT j.id
FROM procrastinate_jobs j
WHERE j.status = 'doing' AND j.worker_id IS NOT NULL
  AND j.queue_name = ANY (%(queues)s::varchar[])
  AND (%(job_ids)s::bigint[] IS NULL OR j.id = ANY (%(job_ids)s::bigint[]))
  AND pg_postmaster_start_time() < now() - make_interval(secs => %(settle_s)s)
  AND NOT EXISTS (
      SELECT 1 FROM pg_locks l
      WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
        AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
        AND l.classid = %(namespace)s::bigint::oid
        AND l.objid = (j.worker_id & 2147483647)::oid)
ORDER BY j.id
FOR UPDATE OF j SKIP LOCKED;

-- name: requeue_jobs
-- Puts `doing` jobs back to `todo` as procrastinate's own retry does (attempt + 1), and wakes
-- the workers listening on their queues: a retry, unlike an insert, notifies no one, and they
-- would otherwise find the job only at their next poll.
WITH retried AS (
    SELECT j.id, j.queue_name, procrastinate_retry_job_v2(j.id, now(), NULL, NULL, NULL)
    FROM procrastinate_jobs j
    WHERE j.id = ANY (%(job_ids)s::bigint[]) AND j.status = 'doing'
)
SELECT r.id, r.queue_name,
       pg_notify('procrastinate_queue_v1#' || r.queue_name,
                 json_build_object('type', 'job_inserted', 'job_id', r.id)::text)
FROM retried r;

-- name: fetch_jobs
-- Up to %(max)s jobs for this worker, taken as that many procrastinate fetches would take them
-- (sql/migrations/031).
SELECT * FROM imagejobs_fetch_jobs(%(queues)s::varchar[], %(worker_id)s, %(max)s);

-- name: release_jobs
-- Jobs this worker took but did not start (it stopped first) back to `todo`, their attempts
-- untouched since they never ran, and their queues' workers woken. One whose abort was
-- requested meanwhile (its generation was cancelled) ends `aborted`, as it would have run.
-- procrastinate sets worker_id NULL when a worker unregisters, so those rows match too: the
-- ids are this worker's own.
WITH released AS (
    UPDATE procrastinate_jobs
    SET status = CASE WHEN abort_requested THEN 'aborted' ELSE 'todo' END::procrastinate_job_status,
        abort_requested = false,
        worker_id = NULL
    WHERE id = ANY (%(job_ids)s::bigint[]) AND status = 'doing'
      AND (worker_id = %(worker_id)s OR worker_id IS NULL)
    RETURNING id, queue_name, status
)
SELECT r.id, r.status::text AS status,
       CASE WHEN r.status = 'todo' THEN pg_notify('procrastinate_queue_v1#' || r.queue_name,
            json_build_object('type', 'job_inserted', 'job_id', r.id)::text) END
FROM released r;

-- name: finish_jobs
-- procrastinate's finish for many jobs in one statement (worker/queue/completer.py); it raises,
-- failing them all, if one is no longer `doing` or `todo`.
SELECT count(procrastinate_finish_job_v1(f.id, f.status::procrastinate_job_status, f.delete_job))
FROM unnest(%(job_ids)s::bigint[], %(statuses)s::text[], %(delete_jobs)s::boolean[])
    AS f(id, status, delete_job);

-- name: retry_jobs
-- procrastinate's retry for many jobs in one statement (worker/queue/completer.py); it raises,
-- failing them all, if one is no longer `doing`.
SELECT count(procrastinate_retry_job_v2(r.id, r.retry_at, r.priority, r.queue, r.lock))
FROM unnest(
    %(job_ids)s::bigint[], %(retry_ats)s::timestamptz[], %(priorities)s::int[],
    %(queues)s::text[], %(locks)s::text[]
) AS r(id, retry_at, priority, queue, lock);
