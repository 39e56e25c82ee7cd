-- Issue 16, part 1: per-workspace concurrency caps (`workspace_limits.max_concurrency`, NULL =
-- unlimited), held across all workers. Two gates:
--   * at fetch (cheap, so capped work does not churn): procrastinate's fetch function, as
--     procrastinate 3.10 ships it, with one more condition: a generation run of a workspace at
--     its cap is skipped and the next job in order is taken. A test holds the installed
--     function to it (a procrastinate upgrade that replaces it must be merged here again).
--   * at start (exact): the worker's pending -> processing write passes only while the
--     workspace has a free slot, under a per-workspace lock, so two workers that fetched at
--     the same moment cannot both start the last slot; the one refused waits a second.

CREATE INDEX image_generations_processing_idx
    ON image_generations (workspace_id) WHERE status = 'processing';

-- Whether a generation's workspace is under its cap (true when it has none, or the generation
-- is gone: the run itself then says so).
CREATE FUNCTION imagejobs_may_start(p_generation_id uuid) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = public, pg_temp
    AS $$
    SELECT coalesce((
        SELECT l.max_concurrency IS NULL OR (
            SELECT count(*) FROM image_generations p
            WHERE p.workspace_id = g.workspace_id AND p.status = 'processing'
        ) < l.max_concurrency
        FROM image_generations g
        LEFT JOIN workspace_limits l ON l.workspace_id = g.workspace_id
        WHERE g.id = p_generation_id
    ), true)
    $$;

-- The exact gate: takes the workspace's slot lock for the rest of the transaction (only when it
-- has a cap) and counts with a fresh snapshot what is processing besides this generation.
CREATE FUNCTION imagejobs_slot_free(p_workspace_id uuid, p_generation_id uuid) RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = public, pg_temp
    AS $$
DECLARE
    _cap integer;
BEGIN
    SELECT max_concurrency INTO _cap FROM workspace_limits WHERE workspace_id = p_workspace_id;
    IF _cap IS NULL THEN
        RETURN true;
    END IF;
    PERFORM pg_advisory_xact_lock(22, hashtext(p_workspace_id::text));
    RETURN (
        SELECT count(*) FROM image_generations
        WHERE workspace_id = p_workspace_id AND status = 'processing' AND id <> p_generation_id
    ) < _cap;
END;
$$;

CREATE OR REPLACE FUNCTION procrastinate_fetch_job_v2(
    target_queue_names character varying[],
    p_worker_id bigint
)
    RETURNS procrastinate_jobs
    LANGUAGE plpgsql
AS $$
DECLARE
	found_jobs procrastinate_jobs;
BEGIN
    WITH candidate AS (
        SELECT jobs.*
            FROM procrastinate_jobs AS jobs
            WHERE
                -- reject the job if its lock has earlier or higher priority jobs
                NOT EXISTS (
                    SELECT 1
                        FROM procrastinate_jobs AS other_jobs
                        WHERE
                            jobs.lock IS NOT NULL
                            AND other_jobs.lock = jobs.lock
                            AND (
                                -- job with same lock is already running
                                other_jobs.status = 'doing'
                                OR
                                -- job with same lock is waiting and has higher priority (or same priority but was queued first)
                                (
                                    other_jobs.status = 'todo'
                                    AND (
                                        other_jobs.priority > jobs.priority
                                        OR (
                                        other_jobs.priority = jobs.priority
                                        AND other_jobs.id < jobs.id
                                        )
                                    )
                                )
                            )
                )
                AND jobs.status = 'todo'
                AND (target_queue_names IS NULL OR jobs.queue_name = ANY( target_queue_names ))
                AND (jobs.scheduled_at IS NULL OR jobs.scheduled_at <= now())
                -- imagejobs (sql/migrations/022): a generation run of a workspace at its
                -- max_concurrency waits, and the next job in order is taken instead.
                AND (jobs.task_name NOT IN ('generate_image', 'edit_image')
                     OR imagejobs_may_start(imagejobs_uuid_or_null(jobs.args->>'generation_id')))
            ORDER BY jobs.priority DESC, jobs.id ASC LIMIT 1
            FOR UPDATE OF jobs SKIP LOCKED
    )
    UPDATE procrastinate_jobs
        SET status = 'doing', worker_id = p_worker_id
        FROM candidate
        WHERE procrastinate_jobs.id = candidate.id
        RETURNING procrastinate_jobs.* INTO found_jobs;

 RETURN found_jobs;
END;
$$;
