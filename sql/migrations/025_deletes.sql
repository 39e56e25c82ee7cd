-- Issue 17 part 1: deletes.
--
-- * `imagejobs_deletions`: the audit trail of every delete (who, when, what), and the state of a
--   project delete that runs as a background job (`running` until the project row is gone).
--   The imagejobs_ prefix puts it among the tables imagejobs_enable_rls() closes to Supabase's
--   roles; members have no DELETE on generations or projects either (sql/008), so a delete
--   always goes through the API, which removes the files first.
-- * `projects.deleting_at`: set when a project delete starts. Such a project is hidden from the
--   API's reads and refuses new generations (API and plain SQL alike).
-- * `imagejobs_delete_generations(...)`: the last step of a delete, in the caller's transaction:
--   deletes the generations that have not changed since their files were removed, keeps each
--   history a chain (children of a deleted root move to the next version), clears canvas nodes
--   that showed a deleted result, and hands pending provider cancels what they need once the
--   row is gone.
-- The project counters need no change: the counting trigger already moves a deleted row out of
-- its bucket (sql/002), and a project's own delete cascades to rows whose counters go with it.

CREATE TABLE imagejobs_deletions (
    id bigserial PRIMARY KEY,
    workspace_id uuid NOT NULL,
    kind text NOT NULL CONSTRAINT imagejobs_deletions_kind_check CHECK (kind IN ('generation', 'project')),
    target_id uuid NOT NULL,
    -- who asked: `api_key:<id>`, `user:<id>` or `cli:<os user>`
    deleted_by text NOT NULL CONSTRAINT imagejobs_deletions_deleted_by_check CHECK (length(deleted_by) <= 200),
    status text NOT NULL DEFAULT 'done'
        CONSTRAINT imagejobs_deletions_status_check CHECK (status IN ('running', 'done')),
    requested_at timestamptz NOT NULL DEFAULT now(),
    -- when the rows were gone (NULL while a project delete runs)
    deleted_at timestamptz,
    -- what went: generation ids, file count, progress of a project delete; never image data
    detail jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- the procrastinate job of a project delete
    job_id bigint
);

CREATE INDEX imagejobs_deletions_workspace_idx ON imagejobs_deletions (workspace_id, requested_at DESC);
-- One running delete per project.
CREATE UNIQUE INDEX imagejobs_deletions_running_key ON imagejobs_deletions (target_id)
    WHERE status = 'running';

ALTER TABLE imagejobs_deletions ENABLE ROW LEVEL SECURITY;

ALTER TABLE projects ADD COLUMN deleting_at timestamptz;

-- A project being deleted takes no new generations (an insert from psql included).
CREATE FUNCTION imagejobs_generations_check_project_deleting() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = public, pg_temp
    AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM projects WHERE id = NEW.project_id AND deleting_at IS NOT NULL) THEN
        RAISE check_violation USING
            MESSAGE = format('project %s is being deleted', NEW.project_id),
            COLUMN = 'project_id';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER image_generations_check_project_deleting
    BEFORE INSERT OR UPDATE OF project_id ON image_generations
    FOR EACH ROW EXECUTE FUNCTION imagejobs_generations_check_project_deleting();

-- Deletes the generations of `p_ids` (of `p_workspace_id`) that are finished and unchanged
-- since `p_seen` (their updated_at when their files were removed, in the same order); returns
-- the ids and projects of the deleted ones. With `p_whole_history` nothing is deleted unless
-- every version of the histories involved is among them (a version added meanwhile: the
-- caller goes round again). Not SECURITY DEFINER: a Supabase member calling it deletes
-- nothing (no DELETE privilege or policy).
CREATE FUNCTION imagejobs_delete_generations(
    p_workspace_id uuid, p_ids uuid[], p_seen timestamptz[], p_whole_history boolean
) RETURNS TABLE (id uuid, project_id uuid)
    LANGUAGE plpgsql
    SET search_path = public, pg_temp
    AS $$
#variable_conflict use_column
DECLARE
    _root uuid;
    _new_root uuid;
    _gone uuid[];
BEGIN
    -- New versions of these histories wait until we commit (the version trigger's lock).
    FOR _root IN
        SELECT DISTINCT coalesce(g.parent_id, g.id) FROM image_generations g
        WHERE g.id = ANY (p_ids) AND g.workspace_id = p_workspace_id
        ORDER BY 1
    LOOP
        PERFORM pg_advisory_xact_lock(hashtextextended('imagejobs.versions:' || _root::text, 0));
    END LOOP;

    SELECT coalesce(array_agg(g.id), '{}') INTO _gone
    FROM (
        SELECT g.id FROM image_generations g
        JOIN unnest(p_ids, p_seen) AS seen(id, updated_at) ON seen.id = g.id
        WHERE g.workspace_id = p_workspace_id
          AND g.status NOT IN ('pending', 'processing')
          AND g.updated_at = seen.updated_at
        ORDER BY g.id
        FOR UPDATE OF g
    ) g;
    IF cardinality(_gone) = 0 THEN
        RETURN;
    END IF;

    IF p_whole_history AND EXISTS (
        WITH roots AS (
            SELECT DISTINCT coalesce(h.parent_id, h.id) AS root FROM image_generations h
            WHERE h.id = ANY (_gone)
        )
        SELECT 1 FROM image_generations g JOIN roots ON g.id = roots.root OR g.parent_id = roots.root
        WHERE NOT (g.id = ANY (_gone))
    ) THEN
        RETURN;
    END IF;

    -- A deleted root with surviving versions: the lowest surviving version becomes the root
    -- (it keeps its number) and the others point at it.
    FOR _root IN
        SELECT g.id FROM image_generations g WHERE g.id = ANY (_gone) AND g.parent_id IS NULL
    LOOP
        SELECT c.id INTO _new_root FROM image_generations c
        WHERE c.parent_id = _root AND NOT (c.id = ANY (_gone))
        ORDER BY c.version, c.created_at, c.id
        LIMIT 1;
        IF _new_root IS NOT NULL THEN
            UPDATE image_generations SET parent_id = _new_root
            WHERE parent_id = _root AND image_generations.id <> _new_root
              AND NOT (image_generations.id = ANY (_gone));
            UPDATE image_generations SET parent_id = NULL WHERE image_generations.id = _new_root;
        END IF;
    END LOOP;

    -- Canvas nodes: a deleted result is no longer shown, a deleted generation no longer current.
    UPDATE workflow_nodes n
    SET node_data = (
            CASE WHEN n.node_data->>'imageKey' = d.result_key OR n.node_data->>'imageUrl' = d.result_image_url
                 THEN n.node_data - ARRAY['imageUrl', 'thumbnailUrl', 'imageKey', 'thumbnailKey']
                 ELSE n.node_data END
            - CASE WHEN n.node_data->>'generationId' = d.id::text
                   THEN ARRAY['generationId', 'version'] ELSE ARRAY[]::text[] END
        ) || jsonb_build_object(
            'updatedAt', to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
        ),
        updated_at = now()
    FROM image_generations d
    WHERE d.id = ANY (_gone) AND d.node_id IS NOT NULL
      AND n.workflow_id = d.workflow_id AND n.id = d.node_id AND n.workspace_id = d.workspace_id
      AND (n.node_data->>'generationId' = d.id::text
           OR n.node_data->>'imageKey' = d.result_key
           OR n.node_data->>'imageUrl' = d.result_image_url);

    -- A provider cancel still queued would find no row: give it what it needs.
    UPDATE procrastinate_jobs j
    SET args = j.args || jsonb_build_object(
        'provider', d.provider, 'model', d.model, 'provider_job_id', d.provider_job_id)
    FROM image_generations d
    WHERE d.id = ANY (_gone) AND d.provider_job_id IS NOT NULL
      AND j.task_name = 'cancel_provider_job' AND j.status = 'todo'
      AND j.args->>'generation_id' = d.id::text;

    RETURN QUERY
        DELETE FROM image_generations g WHERE g.id = ANY (_gone)
        RETURNING g.id, g.project_id;
END;
$$;

-- Supabase grants EXECUTE on new functions to its roles by default; this one is the API's and
-- the worker's (RLS would leave a member nothing to delete anyway).
REVOKE EXECUTE ON FUNCTION imagejobs_delete_generations(uuid, uuid[], timestamptz[], boolean) FROM PUBLIC;
DO $$
DECLARE
    _role text;
BEGIN
    FOREACH _role IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF to_regrole(_role) IS NOT NULL THEN
            EXECUTE format(
                'REVOKE EXECUTE ON FUNCTION imagejobs_delete_generations(uuid, uuid[], timestamptz[], boolean) FROM %I',
                _role);
        END IF;
    END LOOP;
END;
$$;
