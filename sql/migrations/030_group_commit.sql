-- Issue 18: the worker's lifecycle writes are committed in groups (worker/queue/committer.py).
--
-- A group is one transaction holding the same write (start, step, complete, fail) for many
-- generations as one multi-row statement. The row triggers are unchanged, so every generation
-- still gets its own event rows, NOTIFYs and counter shifts, in order; what changes is that
-- they commit together. Rows are locked first, here, in a fixed order: the generations by id,
-- then their projects by id. Without it a group would take project rows one generation at a
-- time, in whatever order its rows were processed, while holding the ones before: a writer
-- holding a generation of the group and waiting for its project (a cancel through the API, a
-- single-row write, another worker's group) would then deadlock with it. With it every writer
-- takes generations before projects, and groups take each kind in one order.
CREATE OR REPLACE FUNCTION imagejobs_lock_for_group(p_ids uuid[], p_with_projects boolean)
    RETURNS void
    LANGUAGE plpgsql
    SET search_path TO 'public', 'pg_temp'
AS $$
BEGIN
    PERFORM 1 FROM image_generations WHERE id = ANY (p_ids) ORDER BY id FOR NO KEY UPDATE;
    IF p_with_projects THEN
        PERFORM 1 FROM projects
        WHERE id IN (SELECT project_id FROM image_generations WHERE id = ANY (p_ids))
        ORDER BY id FOR NO KEY UPDATE;
    END IF;
END;
$$;

-- A group's starts, one statement per generation inside the function (in project order, so
-- the project rows are taken in one order): unlike the other kinds they cannot be one multi-row
-- UPDATE, because a workspace's concurrency cap (imagejobs_slot_free) must see the starts
-- before it in the same group, and a statement does not see its own changes.
CREATE OR REPLACE FUNCTION imagejobs_start_generations(p_ids uuid[], p_count_attempts int[])
    RETURNS SETOF image_generations
    LANGUAGE plpgsql
    SET search_path TO 'public', 'pg_temp'
AS $$
DECLARE
    _todo record;
BEGIN
    FOR _todo IN
        SELECT w.id, w.count_attempt
        FROM unnest(p_ids, p_count_attempts) AS w(id, count_attempt)
        JOIN image_generations g ON g.id = w.id
        ORDER BY g.project_id, g.id
    LOOP
        RETURN QUERY
            UPDATE image_generations
            SET status = 'processing', step = 'fetching', progress = 10,
                attempts = attempts + _todo.count_attempt,
                error_code = NULL, error_message = NULL
            WHERE id = _todo.id AND status IN ('pending', 'processing')
              AND imagejobs_slot_free(workspace_id, id)
            RETURNING *;
    END LOOP;
END;
$$;

-- The worker's (Supabase grants EXECUTE on new functions to its roles by default). Neither is
-- SECURITY DEFINER, so a member could do nothing with them that RLS does not allow anyway.
REVOKE EXECUTE ON FUNCTION imagejobs_lock_for_group(uuid[], boolean) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION imagejobs_start_generations(uuid[], int[]) FROM PUBLIC;
DO $$
DECLARE
    _role text;
BEGIN
    FOREACH _role IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF to_regrole(_role) IS NOT NULL THEN
            EXECUTE format('REVOKE EXECUTE ON FUNCTION imagejobs_lock_for_group(uuid[], boolean) FROM %I', _role);
            EXECUTE format('REVOKE EXECUTE ON FUNCTION imagejobs_start_generations(uuid[], int[]) FROM %I', _role);
        END IF;
    END LOOP;
END;
$$;
