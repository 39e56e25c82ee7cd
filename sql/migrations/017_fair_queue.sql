-- Issue 16, parts 1 and 2: fairness between workspaces and priority, with procrastinate's own
-- fetch (ORDER BY priority DESC, id) and its own index, so taking a job costs what it did.
--
-- A generation's job priority is computed when it is deferred (start-time fair queueing):
--   * `image_generations.priority` is a level from -3 to 3 (the API's `interactive` is 0, its
--     `batch` is -1). Levels are strict: any job of a higher level runs before any of a lower one.
--   * Within a level, each workspace has a virtual clock (`imagejobs_fair_queue.finish`). A job
--     gets the tag S = max(V, the workspace's clock) and moves the clock to S + 1, where V is
--     the tag at the head of the level's queue (or the time in seconds since 2026-01-01 when
--     that is earlier, or when nothing waits). Jobs run in tag order, ties by id. A workspace
--     that queues 2,000 jobs has tags V … V + 1999; another workspace's job queued a moment
--     later gets V, so it runs right after the head: a backlog delays other workspaces by at
--     most one job per worker slot, and backlogs take turns. Inside a workspace, order stays
--     first-in first-out. A workspace's clock never lags V, so nobody saves up credit by
--     waiting.
--   * procrastinate priority = level * 2^29 - (S - epoch): levels occupy disjoint ranges of an
--     int4 while S - epoch < 2^29 seconds (17 years, to 2043; imagejobs_job_priority clamps).
-- Jobs other than generation runs (polls, webhook finishers, provider cancels, deliveries) keep
-- priority 0: the head of the interactive level, as in-flight work should be.

ALTER TABLE image_generations
    ADD COLUMN priority smallint NOT NULL DEFAULT 0
        CONSTRAINT image_generations_priority_check CHECK (priority BETWEEN -3 AND 3);

-- Private (the imagejobs_ prefix: imagejobs_enable_rls closes it to Supabase's roles).
CREATE TABLE imagejobs_fair_queue (
    workspace_id uuid NOT NULL,
    priority smallint NOT NULL,
    finish bigint NOT NULL,
    PRIMARY KEY (workspace_id, priority)
);

CREATE FUNCTION imagejobs_job_priority(level smallint, tag bigint) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT (level::bigint * 536870912 - least(greatest(tag, 0), 536870911))::integer
    $$;

-- The next tag of a workspace at a level (and the clock moved past it), under the row's lock.
-- The virtual time V is the tag at the head of the level's runnable queue, or now when that is
-- later (or nothing waits): a newcomer queues right behind the head, never behind a backlog.
-- The head is one probe of procrastinate's (priority DESC, id) index; tag 0 (priority exactly
-- level * 2^29) is other jobs' default priority and is skipped.
CREATE FUNCTION imagejobs_fair_tag(p_workspace_id uuid, p_priority smallint) RETURNS bigint
    LANGUAGE sql
    SET search_path = public, pg_temp
    AS $$
    WITH clock AS (
        SELECT least(
            extract(epoch FROM clock_timestamp() - timestamptz '2026-01-01 00:00:00+00')::bigint,
            coalesce((
                SELECT p_priority::bigint * 536870912 - j.priority
                FROM procrastinate_jobs j
                WHERE j.status = 'todo'
                  AND j.priority < p_priority::bigint * 536870912
                  AND j.priority > p_priority::bigint * 536870912 - 536870912
                  AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())
                ORDER BY j.priority DESC, j.id
                LIMIT 1
            ), 9223372036854775807)
        ) AS v
    )
    INSERT INTO imagejobs_fair_queue AS q (workspace_id, priority, finish)
    SELECT p_workspace_id, p_priority, clock.v + 1 FROM clock
    ON CONFLICT (workspace_id, priority) DO UPDATE
        SET finish = greatest(q.finish, excluded.finish - 1) + 1
    RETURNING finish - 1
    $$;

CREATE FUNCTION imagejobs_defer_generation(
    generation_id uuid, task_name text, workspace_id uuid, priority smallint
) RETURNS bigint
    LANGUAGE sql
    SET search_path = public, pg_temp
    AS $$
    SELECT (procrastinate_defer_jobs_v1(ARRAY[ROW(
        'images', task_name,
        imagejobs_job_priority(priority, imagejobs_fair_tag(workspace_id, priority)),
        'generation:' || generation_id::text, NULL,
        jsonb_build_object('generation_id', generation_id), NULL
    )::procrastinate_job_to_defer_v1]))[1]
    $$;

-- The two-argument form (rescuer, older callers) reads the row it defers for.
CREATE OR REPLACE FUNCTION imagejobs_defer_generation(generation_id uuid, task_name text) RETURNS bigint
    LANGUAGE sql
    AS $$
    SELECT imagejobs_defer_generation(g.id, task_name, g.workspace_id, g.priority)
    FROM image_generations g WHERE g.id = generation_id
    $$;

-- The insert and retry paths defer with the row's own workspace and level (the row is not in
-- the table yet when the insert trigger runs).
CREATE OR REPLACE FUNCTION imagejobs_generations_before_insert() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = public, pg_temp
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
            NEW.job_id := imagejobs_defer_generation(NEW.id, imagejobs_task_for(NEW.edit_mode), NEW.workspace_id, NEW.priority);
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
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = public, pg_temp
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
            OR (OLD.status IN ('failed', 'cancelled') AND NEW.status = 'pending')
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
            NEW.thumbnail_url := NULL;
            NEW.finished_at := NULL;
            NEW.provider_job_id := NULL;
            IF OLD.status IN ('failed', 'cancelled') THEN
                -- A retry: a fresh attempt budget and, unless the writer brought one, a new job.
                NEW.attempts := 0;
                NEW.started_at := NULL;
                IF NEW.job_id IS NOT DISTINCT FROM OLD.job_id THEN
                    NEW.job_id := imagejobs_defer_generation(NEW.id, imagejobs_task_for(NEW.edit_mode), NEW.workspace_id, NEW.priority);
                END IF;
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
