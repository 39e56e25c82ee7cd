-- Row Level Security for Supabase, where clients reach the database as the roles `anon` and
-- `authenticated` (PostgREST, Realtime) and Supabase grants them every table: RLS is what keeps
-- one workspace from another. On a plain Postgres (no `auth` schema) only the trigger functions
-- change; `imagejobs_enable_rls()` does the rest once `auth` exists (`imagejobs migrate` calls it
-- at the end of every run, and it can be called by hand).

-- Triggers run as whoever wrote the row. A user writing under RLS could not enqueue a job,
-- append an event or move a project's counters (those tables are closed to them), so the
-- trigger functions run as their owner, with a search_path nobody can plant objects in.
-- CREATE OR REPLACE resets both attributes: this is re-applied by imagejobs_enable_rls().
CREATE FUNCTION imagejobs_secure_trigger_functions() RETURNS void
    LANGUAGE plpgsql
AS $$
DECLARE
    _function record;
BEGIN
    FOR _function IN
        SELECT DISTINCT p.oid::regprocedure AS signature, p.pronamespace::regnamespace AS schema
          FROM pg_trigger t
          JOIN pg_proc p ON p.oid = t.tgfoid
         WHERE NOT t.tgisinternal
           AND p.proname LIKE 'imagejobs\_%'
           AND p.pronamespace = (SELECT relnamespace FROM pg_class WHERE oid = 'image_generations'::regclass)
           AND (NOT p.prosecdef
                OR p.proconfig IS NULL
                OR NOT format('search_path=%I, pg_temp', p.pronamespace::regnamespace) = ANY (p.proconfig))
    LOOP
        EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER SET search_path = %I, pg_temp',
                       _function.signature, _function.schema);
    END LOOP;
END;
$$;

SELECT imagejobs_secure_trigger_functions();

-- The workspaces of the signed-in Supabase user. SECURITY DEFINER so policies can consult
-- workspace_members without going through its own policy (no recursion), and it can only ever
-- answer for auth.uid(). The body is checked when first called: `auth` may not exist yet.
SET LOCAL check_function_bodies = off;
CREATE FUNCTION imagejobs_member_workspaces() RETURNS SETOF uuid
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = public, pg_temp
AS $$
    SELECT workspace_id FROM workspace_members WHERE user_id = auth.uid()
$$;
RESET check_function_bodies;

-- Creates `policy` on `tbl` unless it exists (imagejobs_enable_rls() runs on every migrate).
CREATE FUNCTION imagejobs_ensure_policy(_schema name, tbl name, policy name, definition text)
    RETURNS void
    LANGUAGE plpgsql
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_policies
                    WHERE schemaname = _schema AND tablename = tbl AND policyname = policy) THEN
        EXECUTE format('CREATE POLICY %I ON %I.%I %s', policy, _schema, tbl, definition);
    END IF;
END;
$$;

-- Enables RLS and the policies. Idempotent, and changes nothing (takes no lock) when everything
-- is already in place, so it is cheap to run on every deploy.
CREATE FUNCTION imagejobs_enable_rls() RETURNS void
    LANGUAGE plpgsql
AS $$
DECLARE
    _schema name;
    _table regclass;
    _read text;
    _member constant text := 'workspace_id IN (SELECT imagejobs_member_workspaces())';
    _insertable constant text := 'id, workspace_id, user_id, project_id, prompt, prompt_spec, '
        'provider, model, original_image_url, metadata, node_id, workflow_id, webhook_url, '
        'webhook_events_filter, idempotency_key';
BEGIN
    IF to_regnamespace('auth') IS NULL OR to_regprocedure('auth.uid()') IS NULL THEN
        RAISE EXCEPTION 'imagejobs_enable_rls() needs Supabase''s auth schema and auth.uid()';
    END IF;
    SELECT relnamespace::regnamespace::name INTO _schema FROM pg_class
     WHERE oid = 'image_generations'::regclass;
    PERFORM imagejobs_secure_trigger_functions();
    IF NOT EXISTS (SELECT 1 FROM pg_proc WHERE oid = 'imagejobs_member_workspaces()'::regprocedure
                   AND format('search_path=%I, pg_temp', _schema) = ANY (proconfig)) THEN
        EXECUTE format('ALTER FUNCTION imagejobs_member_workspaces() SET search_path = %I, pg_temp', _schema);
    END IF;

    -- Every table of ours and of procrastinate: RLS on. Tables without a policy below are
    -- closed to every role but their owner and BYPASSRLS roles (service_role).
    FOR _table IN
        SELECT c.oid::regclass FROM pg_class c
         WHERE c.relnamespace = _schema::regnamespace
           AND c.relkind IN ('r', 'p')
           AND (c.relname IN ('projects', 'image_generations', 'image_events', 'workflow_nodes',
                              'webhook_deliveries', 'api_keys', 'workspace_members',
                              'outgoing_webhook_attempts', 'provider_requests')
                OR c.relname LIKE 'procrastinate\_%'
                OR c.relname LIKE 'imagejobs\_%')
    LOOP
        IF NOT (SELECT relrowsecurity FROM pg_class WHERE oid = _table) THEN
            EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', _table);
        END IF;
        -- Not covered by RLS: TRUNCATE empties a table whatever the policies say.
        IF to_regrole('anon') IS NOT NULL AND has_table_privilege('anon', _table, 'TRUNCATE, TRIGGER, REFERENCES') THEN
            EXECUTE format('REVOKE TRUNCATE, TRIGGER, REFERENCES ON %s FROM anon', _table);
        END IF;
        IF to_regrole('authenticated') IS NOT NULL
           AND has_table_privilege('authenticated', _table, 'TRUNCATE, TRIGGER, REFERENCES') THEN
            EXECUTE format('REVOKE TRUNCATE, TRIGGER, REFERENCES ON %s FROM authenticated', _table);
        END IF;
    END LOOP;

    IF to_regrole('authenticated') IS NULL THEN
        RAISE EXCEPTION 'imagejobs_enable_rls() needs the role authenticated';
    END IF;

    -- Members read their workspaces' rows (and so does Realtime, which applies these policies).
    _read := format('FOR SELECT TO authenticated USING (%s)', _member);
    PERFORM imagejobs_ensure_policy(_schema, 'projects', 'members read their projects', _read);
    PERFORM imagejobs_ensure_policy(_schema, 'image_generations', 'members read their generations', _read);
    PERFORM imagejobs_ensure_policy(_schema, 'image_events', 'members read their events', _read);
    PERFORM imagejobs_ensure_policy(_schema, 'workflow_nodes', 'members read their workflow nodes', _read);
    PERFORM imagejobs_ensure_policy(_schema, 'workspace_members', 'members read their workspaces'' members', _read);

    -- Members ask for generations in their workspaces' projects, as themselves. The insert
    -- trigger takes workspace_id from the project (or refuses a mismatch) before this check,
    -- and enqueues the job. Only request columns may be written: status, job_id,
    -- provider_job_id, parent_id, results and timestamps belong to the lifecycle.
    PERFORM imagejobs_ensure_policy(_schema, 'image_generations', 'members request generations',
        format('FOR INSERT TO authenticated WITH CHECK (%s AND user_id = auth.uid() AND status = ''pending'')', _member));
    -- ... and cancel them: status is the only column they may update, and only to cancelled
    -- (the update trigger refuses the transition from a finished status, and cancels the job).
    PERFORM imagejobs_ensure_policy(_schema, 'image_generations', 'members cancel generations',
        format('FOR UPDATE TO authenticated USING (%1$s) WITH CHECK (%1$s AND status = ''cancelled'')', _member));
    IF has_table_privilege('authenticated', 'image_generations', 'INSERT') THEN
        REVOKE INSERT ON image_generations FROM authenticated;
    END IF;
    IF has_table_privilege('authenticated', 'image_generations', 'UPDATE') THEN
        REVOKE UPDATE ON image_generations FROM authenticated;
    END IF;
    IF NOT has_column_privilege('authenticated', 'image_generations', 'prompt', 'INSERT') THEN
        EXECUTE format('GRANT INSERT (%s) ON image_generations TO authenticated', _insertable);
    END IF;
    IF NOT has_column_privilege('authenticated', 'image_generations', 'status', 'UPDATE') THEN
        GRANT UPDATE (status) ON image_generations TO authenticated;
    END IF;
    -- A Supabase client may leave user_id out: it is then the signed-in user (NULL otherwise,
    -- as before, for the API and the worker).
    IF (SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d
          JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
         WHERE d.adrelid = 'image_generations'::regclass AND a.attname = 'user_id') IS NULL THEN
        ALTER TABLE image_generations ALTER COLUMN user_id SET DEFAULT auth.uid();
    END IF;
END;
$$;

SELECT imagejobs_enable_rls() WHERE to_regnamespace('auth') IS NOT NULL;
