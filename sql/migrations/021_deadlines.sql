-- Issue 16, part 6: deadlines and delayed starts, for API and SQL writers alike.
--   * `run_at`: the generation's job is scheduled for then (procrastinate's scheduled_at).
--   * `deadline_at`: a job of its own (`expire_generation`, scheduled for the deadline) fails
--     the generation with `timeout` if it is not finished by then, aborting its job and asking
--     a queue-based provider to stop, as a cancel does.
-- Position in the queue is computed on read (imagejobs_queue_position).

ALTER TABLE image_generations
    ADD COLUMN run_at timestamptz NULL,
    ADD COLUMN deadline_at timestamptz NULL;

CREATE FUNCTION imagejobs_generations_schedule() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = public, pg_temp
    AS $$
BEGIN
    IF NEW.status <> 'pending' THEN
        RETURN NULL;
    END IF;
    IF NEW.run_at IS NOT NULL AND NEW.run_at > now() AND NEW.job_id IS NOT NULL THEN
        -- Not yet committed, so no worker can have taken it.
        UPDATE procrastinate_jobs SET scheduled_at = NEW.run_at
        WHERE id = NEW.job_id AND status = 'todo';
    END IF;
    IF NEW.deadline_at IS NOT NULL THEN
        PERFORM procrastinate_defer_jobs_v1(ARRAY[ROW(
            'images', 'expire_generation', 0, NULL, NULL,
            jsonb_build_object('generation_id', NEW.id), NEW.deadline_at
        )::procrastinate_job_to_defer_v1]);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER image_generations_schedule AFTER INSERT ON image_generations
    FOR EACH ROW EXECUTE FUNCTION imagejobs_generations_schedule();

-- Fails an unfinished generation whose deadline has passed; whether it did.
CREATE FUNCTION imagejobs_expire_generation(p_generation_id uuid) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = public, pg_temp
    AS $$
DECLARE
    _old image_generations;
BEGIN
    SELECT * INTO _old FROM image_generations
    WHERE id = p_generation_id AND status IN ('pending', 'processing') AND deadline_at <= now()
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE image_generations
    SET status = 'failed', error_code = 'timeout',
        error_message = format('Not finished by its deadline (%s)',
                               to_char(_old.deadline_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))
    WHERE id = p_generation_id;
    IF _old.job_id IS NOT NULL THEN
        -- todo -> cancelled (never runs); doing -> abort requested (the worker stops it).
        PERFORM procrastinate_cancel_job_v1(_old.job_id, true, false);
    END IF;
    IF _old.provider_job_id IS NOT NULL THEN
        PERFORM procrastinate_defer_jobs_v1(ARRAY[ROW(
            'images', 'cancel_provider_job', 0, NULL, NULL,
            jsonb_build_object('generation_id', p_generation_id), NULL
        )::procrastinate_job_to_defer_v1]);
    END IF;
    RETURN true;
END;
$$;

-- How many runnable generation jobs are ahead of this generation's (NULL unless it waits): a
-- range of procrastinate's (priority DESC, id) index, so it costs what the position is.
CREATE FUNCTION imagejobs_queue_position(p_job_id bigint) RETURNS bigint
    LANGUAGE sql STABLE
    SET search_path = public, pg_temp
    AS $$
    SELECT (
        SELECT count(*) FROM procrastinate_jobs j
        WHERE j.status = 'todo' AND j.queue_name = me.queue_name
          AND j.task_name IN ('generate_image', 'edit_image')
          AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())
          AND (j.priority > me.priority OR (j.priority = me.priority AND j.id < me.id))
    )
    FROM procrastinate_jobs me
    WHERE me.id = p_job_id AND me.status = 'todo'
    $$;
