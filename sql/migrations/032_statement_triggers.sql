-- Issue 18: the project counters and the event rows are kept by statement-level triggers.
--
-- They were row triggers: a statement that changed a hundred generations of one project (a
-- group of the worker's completions, a bulk cancel, a batch insert) updated that project's row a
-- hundred times (each a new row version and a `project_status` NOTIFY) and ran a hundred
-- single-row INSERTs into image_events. Now each statement's changes are read from its
-- transition tables once: one UPDATE per project it touched, with the net shift of each count,
-- and one INSERT ... SELECT of its event rows. A single-row statement ends the same as before:
-- the same counts, the same event row, the same NOTIFYs.
--
-- What a reader sees: an event per changed generation, as before; a statement whose changes
-- cancel out in a project's counts (none do today) sends no `project_status`; a multi-row
-- statement sends one `project_status` per project with its counts after the statement, not
-- one per row. Statement triggers run after the row triggers, so an event row is now written
-- after the canvas node's sync (image_generations_sync_node), in the same transaction.
--
-- Postgres allows transition tables only on single-event triggers, hence three counting
-- triggers (insert, update, delete) sharing one function and two recording ones (insert,
-- update) sharing another; each function reads the transition tables its event has.

DROP TRIGGER IF EXISTS image_generations_count ON image_generations;
DROP TRIGGER IF EXISTS image_generations_record_event ON image_generations;
DROP FUNCTION IF EXISTS imagejobs_generations_count();
DROP FUNCTION IF EXISTS imagejobs_generations_record_event();

-- Each statement's net shift of each project's counts: one UPDATE per project it changed, in
-- project id order (the order every writer that locks more than one project takes them, 030).
CREATE FUNCTION imagejobs_generations_count() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = public, pg_temp
    AS $$
DECLARE
    _projects uuid[];
    _statuses text[];
    _signs int[];
    _shift record;
BEGIN
    -- A transition table exists only for the events it can hold: each branch names its own.
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(project_id), array_agg(status), array_agg(1)
        INTO _projects, _statuses, _signs FROM new_rows;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT array_agg(project_id), array_agg(status), array_agg(-1)
        INTO _projects, _statuses, _signs FROM old_rows;
    ELSE
        -- Only the rows whose status or project changed: a step alone shifts nothing.
        SELECT array_agg(c.project_id), array_agg(c.status), array_agg(c.sign)
        INTO _projects, _statuses, _signs
        FROM new_rows n
        JOIN old_rows o ON o.id = n.id
        CROSS JOIN LATERAL (VALUES (n.project_id, n.status, 1), (o.project_id, o.status, -1))
            AS c(project_id, status, sign)
        WHERE n.status <> o.status OR n.project_id <> o.project_id;
    END IF;
    IF _projects IS NULL THEN
        RETURN NULL;
    END IF;
    FOR _shift IN
        SELECT project_id,
               coalesce(sum(sign) FILTER (WHERE status = 'pending'), 0) AS pending,
               coalesce(sum(sign) FILTER (WHERE status = 'processing'), 0) AS processing,
               coalesce(sum(sign) FILTER (WHERE status = 'completed'), 0) AS completed,
               coalesce(sum(sign) FILTER (WHERE status = 'failed'), 0) AS failed,
               coalesce(sum(sign) FILTER (WHERE status = 'cancelled'), 0) AS cancelled
        FROM unnest(_projects, _statuses, _signs) AS c(project_id, status, sign)
        GROUP BY project_id
        ORDER BY project_id
    LOOP
        CONTINUE WHEN (_shift.pending, _shift.processing, _shift.completed, _shift.failed,
                       _shift.cancelled) = (0, 0, 0, 0, 0);
        UPDATE projects SET
            pending_count = pending_count + _shift.pending,
            processing_count = processing_count + _shift.processing,
            completed_count = completed_count + _shift.completed,
            failed_count = failed_count + _shift.failed,
            cancelled_count = cancelled_count + _shift.cancelled
        WHERE id = _shift.project_id;
    END LOOP;
    RETURN NULL;
END;
$$;

-- What an event row carries besides its status, step and progress.
-- No SET clause: it would keep the function from being inlined into the statement (it calls
-- nothing outside pg_catalog).
CREATE FUNCTION imagejobs_event_data(g image_generations) RETURNS jsonb
    LANGUAGE sql STABLE
    AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'result_image_url', g.result_image_url,
        'thumbnail_url', g.thumbnail_url,
        'error_code', g.error_code,
        'error_message', left(g.error_message, 1000),
        'error_resolution', g.error_resolution,
        'attempts', g.attempts,
        'version', g.version
    ))
$$;

-- An event per inserted generation (`status`) and per updated one whose status (`status`) or
-- step or progress (`progress`) changed.
CREATE FUNCTION imagejobs_generations_record_event() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = public, pg_temp
    AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO image_events
            (generation_id, project_id, workspace_id, kind, status, step, progress, message, data)
        SELECT n.id, n.project_id, n.workspace_id, 'status', n.status, n.step, n.progress,
               imagejobs_step_label(n.step), imagejobs_event_data(n)
        FROM new_rows n;
    ELSE
        INSERT INTO image_events
            (generation_id, project_id, workspace_id, kind, status, step, progress, message, data)
        SELECT n.id, n.project_id, n.workspace_id,
               CASE WHEN n.status <> o.status THEN 'status' ELSE 'progress' END,
               n.status, n.step, n.progress,
               imagejobs_step_label(n.step), imagejobs_event_data(n)
        FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE n.status <> o.status OR n.step <> o.step OR n.progress <> o.progress;
    END IF;
    RETURN NULL;
END;
$$;

-- The deprecated-model warning follows the generation's first event, as it did when both were
-- row triggers: so it is a statement trigger too (they fire in name order).
DROP TRIGGER IF EXISTS image_generations_warn_deprecated_model ON image_generations;
DROP FUNCTION IF EXISTS imagejobs_generations_warn_deprecated_model();
CREATE FUNCTION imagejobs_generations_warn_deprecated_model() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = public, pg_temp
    AS $$
BEGIN
    INSERT INTO image_events
        (generation_id, project_id, workspace_id, kind, status, step, progress, message, data)
    SELECT n.id, n.project_id, n.workspace_id, 'log', n.status, n.step, n.progress,
           format('Model %s is deprecated%s%s', n.model,
                  coalesce('; it shuts down on ' || m.shutdown_date, ''),
                  coalesce('; use ' || m.replacement || ' instead', '')),
           jsonb_strip_nulls(jsonb_build_object(
               'deprecated_model', n.model,
               'shutdown_date', m.shutdown_date,
               'replacement', m.replacement))
    FROM new_rows n
    JOIN models m ON m.provider = n.provider AND m.model = n.model AND m.status = 'deprecated'
    WHERE n.status = 'pending';
    RETURN NULL;
END;
$$;

CREATE TRIGGER image_generations_count_inserts AFTER INSERT ON image_generations
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION imagejobs_generations_count();
CREATE TRIGGER image_generations_count_updates AFTER UPDATE ON image_generations
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION imagejobs_generations_count();
CREATE TRIGGER image_generations_count_deletes AFTER DELETE ON image_generations
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION imagejobs_generations_count();
CREATE TRIGGER image_generations_record_inserts AFTER INSERT ON image_generations
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION imagejobs_generations_record_event();
CREATE TRIGGER image_generations_record_updates AFTER UPDATE ON image_generations
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION imagejobs_generations_record_event();
CREATE TRIGGER image_generations_warn_deprecated_model AFTER INSERT ON image_generations
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION imagejobs_generations_warn_deprecated_model();

-- The group writes' lock (030) no longer takes projects: the counting trigger does, at the end of
-- each statement, in id order, after the statement has locked its generations. What is left is
-- the generations, by id. The row-by-row counting helper of migration 002 has no caller left.
DROP FUNCTION IF EXISTS imagejobs_lock_for_group(uuid[], boolean);
DROP FUNCTION IF EXISTS imagejobs_shift_counts(uuid, text, text);
CREATE FUNCTION imagejobs_lock_generations(p_ids uuid[]) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO 'public', 'pg_temp'
AS $$
BEGIN
    -- PERFORM reads every row (a sql function would stop at the first, locking one).
    PERFORM 1 FROM image_generations WHERE id = ANY (p_ids) ORDER BY id FOR NO KEY UPDATE;
END;
$$;

CREATE OR REPLACE FUNCTION imagejobs_set_steps(p_ids uuid[], p_steps text[], p_progresses int[])
    RETURNS SETOF uuid
    LANGUAGE plpgsql
    SET search_path TO 'public', 'pg_temp'
AS $$
BEGIN
    PERFORM imagejobs_lock_generations(p_ids);
    RETURN QUERY
        UPDATE image_generations g SET step = w.step, progress = w.progress
        FROM unnest(p_ids, p_steps, p_progresses) AS w(id, step, progress)
        WHERE g.id = w.id AND g.status = 'processing'
        RETURNING g.id;
END;
$$;

-- Starts (030) in workspaces without a concurrency cap are made by one statement for the whole
-- group, so that their counts and events are written once per group as well; only the starts
-- a cap governs still go one by one, in project order, each seeing the ones before it.
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
    _capped uuid[];
    _started uuid[];
BEGIN
    PERFORM imagejobs_lock_generations(p_ids);
    SELECT coalesce(array_agg(g.id), '{}') INTO _capped
    FROM image_generations g
    JOIN workspace_limits l ON l.workspace_id = g.workspace_id
    WHERE g.id = ANY (p_ids) AND l.max_concurrency IS NOT NULL;
    IF _capped <> '{}' THEN
        FOR _cap_key IN
            SELECT DISTINCT hashtext(g.workspace_id::text)
            FROM image_generations g WHERE g.id = ANY (_capped)
            ORDER BY 1
        LOOP
            PERFORM pg_advisory_xact_lock(22, _cap_key);
        END LOOP;
    END IF;

    WITH started AS (
        UPDATE image_generations g
        SET status = 'processing', step = 'fetching', progress = 10,
            attempts = g.attempts + w.count_attempt,
            error_code = NULL, error_message = NULL
        FROM unnest(p_ids, p_count_attempts) AS w(id, count_attempt)
        WHERE g.id = w.id AND g.status IN ('pending', 'processing') AND g.id <> ALL (_capped)
        RETURNING g.id
    )
    SELECT coalesce(array_agg(id), '{}') INTO _started FROM started;
    UPDATE image_generations g SET step = 'processing', progress = w.progress
    FROM unnest(p_ids, p_advance_providers, p_progresses) AS w(id, advance_providers, progress)
    WHERE g.id = w.id AND g.id = ANY (_started)
      AND g.original_image_url IS NULL
      AND g.provider = ANY (string_to_array(w.advance_providers, ','));
    RETURN QUERY SELECT * FROM image_generations WHERE id = ANY (_started);
    IF _capped = '{}' THEN
        RETURN;
    END IF;

    FOR _todo IN
        SELECT w.*
        FROM unnest(p_ids, p_count_attempts, p_advance_providers, p_progresses)
            AS w(id, count_attempt, advance_providers, progress)
        JOIN image_generations g ON g.id = w.id
        WHERE w.id = ANY (_capped)
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

-- Completions and failures no longer lock their projects up front (above): the order every
-- writer follows (generations, then projects by id) holds, and a project row is held from the
-- statement's end to the commit, not for the whole group.
CREATE OR REPLACE FUNCTION imagejobs_complete_generations(
    p_ids uuid[], p_result_urls text[], p_result_keys text[], p_thumbnail_urls text[],
    p_thumbnail_keys text[], p_metadata jsonb[], p_saving_progresses int[]
)
    RETURNS SETOF uuid
    LANGUAGE plpgsql
    SET search_path TO 'public', 'pg_temp'
AS $$
BEGIN
    PERFORM imagejobs_lock_generations(p_ids);
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
    PERFORM imagejobs_lock_generations(p_ids);
    RETURN QUERY
        UPDATE image_generations g SET status = 'failed', error_code = w.error_code, error_message = w.error_message
        FROM unnest(p_ids, p_error_codes, p_error_messages) AS w(id, error_code, error_message)
        WHERE g.id = w.id AND g.status IN ('pending', 'processing')
        RETURNING g.id;
END;
$$;

-- The worker's, like 030's (Supabase grants EXECUTE on new functions to its roles by default).
DO $$
DECLARE
    _role text;
BEGIN
    REVOKE EXECUTE ON FUNCTION imagejobs_lock_generations(uuid[]) FROM PUBLIC;
    FOREACH _role IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF to_regrole(_role) IS NOT NULL THEN
            EXECUTE format('REVOKE EXECUTE ON FUNCTION imagejobs_lock_generations(uuid[]) FROM %I', _role);
        END IF;
    END LOOP;
END;
$$;
