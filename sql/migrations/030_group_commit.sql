-- Issue 18: the worker's lifecycle writes are committed in groups (worker/queue/committer.py).
--
-- A group is the same write (start, step, complete, fail) for many generations, made by one
-- call of one of the functions below: one statement, one transaction, one round trip. The row
-- triggers are unchanged, so every generation still gets its own event rows, NOTIFYs and
-- counter shifts, in order; what changes is that they commit together. Each function returns
-- the rows it wrote: a generation the write did not match (cancelled, finished, gone) is
-- absent, as with the one-row compare-and-set writes in sql/queries/generations.sql.
--
-- Rows are locked first, in a fixed order: the generations by id, then (for writes that change
-- a status) their projects by id. Without it a group would take project rows one at a time
-- while holding the ones before, and a writer holding one of the group's generations and
-- waiting for its project (a cancel through the API) would deadlock with it
-- (tests/worker/test_committer.py shows it). With it every writer takes generations before
-- projects, and groups take each in one order. The bulk actions lock their generations by id
-- too (sql/queries/generations.sql), so they keep the same order. Should a deadlock happen
-- anyway, Postgres aborts one side; a group's writes are then made one by one.
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

-- Starts: pending/processing -> processing at `fetching`, and on to `processing` in the same
-- transaction for a generation with nothing to fetch (no source image, and its provider among
-- the row's comma-separated `p_advance_providers`; NULL: never). One statement per generation
-- inside the function, in project order: a workspace's concurrency cap (imagejobs_slot_free)
-- must see the starts before it in the group, which one multi-row UPDATE would not. Project
-- rows are therefore taken by the starts themselves, in that order, not locked up front; the
-- caps' advisory locks (which imagejobs_slot_free holds to the end of the transaction) are
-- taken up front, in key order, so two groups of starts in two capped workspaces cannot wait
-- for each other's.
CREATE OR REPLACE FUNCTION imagejobs_start_generations(
    p_ids uuid[], p_count_attempts int[], p_advance_providers text[], p_progresses int[]
)
    RETURNS SETOF image_generations
    LANGUAGE plpgsql
    SET search_path TO 'public', 'pg_temp'
AS $$
DECLARE
    _todo record;
    _row image_generations;
    _cap_key integer;
BEGIN
    PERFORM imagejobs_lock_for_group(p_ids, false);
    FOR _cap_key IN
        SELECT DISTINCT hashtext(g.workspace_id::text)
        FROM image_generations g
        JOIN workspace_limits l ON l.workspace_id = g.workspace_id
        WHERE g.id = ANY (p_ids) AND l.max_concurrency IS NOT NULL
        ORDER BY 1
    LOOP
        PERFORM pg_advisory_xact_lock(22, _cap_key);
    END LOOP;
    FOR _todo IN
        SELECT w.*
        FROM unnest(p_ids, p_count_attempts, p_advance_providers, p_progresses)
            AS w(id, count_attempt, advance_providers, progress)
        JOIN image_generations g ON g.id = w.id
        ORDER BY g.project_id, g.id
    LOOP
        UPDATE image_generations
        SET status = 'processing', step = 'fetching', progress = 10,
            attempts = attempts + _todo.count_attempt,
            error_code = NULL, error_message = NULL
        WHERE id = _todo.id AND status IN ('pending', 'processing')
          AND imagejobs_slot_free(workspace_id, id)
        RETURNING * INTO _row;
        CONTINUE WHEN NOT FOUND;
        IF _row.original_image_url IS NULL
           AND _row.provider = ANY (string_to_array(_todo.advance_providers, ',')) THEN
            UPDATE image_generations SET step = 'processing', progress = _todo.progress
            WHERE id = _todo.id
            RETURNING * INTO _row;
        END IF;
        RETURN NEXT _row;
    END LOOP;
END;
$$;

CREATE OR REPLACE FUNCTION imagejobs_set_steps(p_ids uuid[], p_steps text[], p_progresses int[])
    RETURNS SETOF uuid
    LANGUAGE plpgsql
    SET search_path TO 'public', 'pg_temp'
AS $$
BEGIN
    PERFORM imagejobs_lock_for_group(p_ids, false);
    RETURN QUERY
        UPDATE image_generations g SET step = w.step, progress = w.progress
        FROM unnest(p_ids, p_steps, p_progresses) AS w(id, step, progress)
        WHERE g.id = w.id AND g.status = 'processing'
        RETURNING g.id;
END;
$$;

-- Completions, each with its `saving` step first when `p_saving_progresses` has one for it
-- (both events, in order, in the same transaction).
CREATE OR REPLACE FUNCTION imagejobs_complete_generations(
    p_ids uuid[], p_result_urls text[], p_result_keys text[], p_thumbnail_urls text[],
    p_thumbnail_keys text[], p_metadata jsonb[], p_saving_progresses int[]
)
    RETURNS SETOF uuid
    LANGUAGE plpgsql
    SET search_path TO 'public', 'pg_temp'
AS $$
BEGIN
    PERFORM imagejobs_lock_for_group(p_ids, true);
    UPDATE image_generations g SET step = 'saving', progress = w.progress
    FROM unnest(p_ids, p_saving_progresses) AS w(id, progress)
    WHERE g.id = w.id AND w.progress IS NOT NULL AND g.status = 'processing';
    RETURN QUERY
        UPDATE image_generations g
        SET status = 'completed', result_image_url = w.result_url, result_key = w.result_key,
            thumbnail_url = w.thumbnail_url, thumbnail_key = w.thumbnail_key,
            metadata = g.metadata || w.metadata
        FROM unnest(p_ids, p_result_urls, p_result_keys, p_thumbnail_urls, p_thumbnail_keys, p_metadata)
            AS w(id, result_url, result_key, thumbnail_url, thumbnail_key, metadata)
        WHERE g.id = w.id AND g.status = 'processing'
        RETURNING g.id;
END;
$$;

CREATE OR REPLACE FUNCTION imagejobs_fail_generations(
    p_ids uuid[], p_error_codes text[], p_error_messages text[]
)
    RETURNS SETOF uuid
    LANGUAGE plpgsql
    SET search_path TO 'public', 'pg_temp'
AS $$
BEGIN
    PERFORM imagejobs_lock_for_group(p_ids, true);
    RETURN QUERY
        UPDATE image_generations g SET status = 'failed', error_code = w.error_code, error_message = w.error_message
        FROM unnest(p_ids, p_error_codes, p_error_messages) AS w(id, error_code, error_message)
        WHERE g.id = w.id AND g.status IN ('pending', 'processing')
        RETURNING g.id;
END;
$$;

-- The worker's (Supabase grants EXECUTE on new functions to its roles by default). None is
-- SECURITY DEFINER, so a member could do nothing with them that RLS does not allow anyway.
DO $$
DECLARE
    _function text;
    _role text;
BEGIN
    FOREACH _function IN ARRAY ARRAY[
        'imagejobs_lock_for_group(uuid[], boolean)',
        'imagejobs_start_generations(uuid[], int[], text[], int[])',
        'imagejobs_set_steps(uuid[], text[], int[])',
        'imagejobs_complete_generations(uuid[], text[], text[], text[], text[], jsonb[], int[])',
        'imagejobs_fail_generations(uuid[], text[], text[])'
    ] LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', _function);
        FOREACH _role IN ARRAY ARRAY['anon', 'authenticated'] LOOP
            IF to_regrole(_role) IS NOT NULL THEN
                EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM %I', _function, _role);
            END IF;
        END LOOP;
    END LOOP;
END;
$$;
