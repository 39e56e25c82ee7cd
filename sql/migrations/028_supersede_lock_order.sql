-- One lock order for every writer of a generation: its row, then its project's, then its node's.
--
-- A generation inserted on a canvas node cancels older unfinished work there. That cancel ran
-- in the node trigger, after the insert's counter update had locked the project row: the
-- inserter held the project and waited for the older generation's row, while a worker
-- completing that generation held its row and waited for the project (its counter update).
-- Postgres broke the cycle by failing one of them (seen under the fuzz test). Every other
-- write takes generation, then project (counters), then node (sync). The supersede now runs
-- in a trigger of its own that fires first (AFTER row triggers fire in name order: `0_` sorts
-- before `count`), so the inserter takes the older generations' rows before anything else.

CREATE FUNCTION imagejobs_generations_supersede() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = public, pg_temp
    AS $$
BEGIN
    IF NEW.node_id IS NULL OR NEW.workflow_id IS NULL OR NEW.status NOT IN ('pending', 'processing') THEN
        RETURN NULL;
    END IF;
    -- The newer generation supersedes older unfinished work on the node, provider work
    -- included (the cancel trigger asks the provider to stop).
    UPDATE image_generations
    SET status = 'cancelled', error_message = format('Superseded by generation %s on node %s', NEW.id, NEW.node_id)
    WHERE workflow_id = NEW.workflow_id AND node_id = NEW.node_id
      AND workspace_id = NEW.workspace_id AND id <> NEW.id
      AND status IN ('pending', 'processing');
    RETURN NULL;
END;
$$;

CREATE TRIGGER image_generations_0_supersede AFTER INSERT ON image_generations
    FOR EACH ROW EXECUTE FUNCTION imagejobs_generations_supersede();

-- The node trigger, without the supersede (now above), and carrying the storage keys of
-- migration 023 beside the URLs (`imageKey`, `thumbnailKey`) so readers can sign fresh URLs.
CREATE OR REPLACE FUNCTION imagejobs_generations_sync_node() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = public, pg_temp
    AS $$
DECLARE
    _patch jsonb;
BEGIN
    IF NEW.node_id IS NULL OR NEW.workflow_id IS NULL THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.status = OLD.status
       AND NEW.result_image_url IS NOT DISTINCT FROM OLD.result_image_url
       AND NEW.thumbnail_url IS NOT DISTINCT FROM OLD.thumbnail_url
       AND NEW.result_key IS NOT DISTINCT FROM OLD.result_key THEN
        RETURN NULL;
    END IF;
    _patch := jsonb_build_object(
        'status', imagejobs_node_status(NEW.status),
        'generationId', NEW.id,
        'version', NEW.version,
        'error', CASE WHEN NEW.status IN ('failed', 'cancelled') THEN jsonb_build_object(
            'code', NEW.error_code,
            'message', NEW.error_message,
            'resolution', NEW.error_resolution
        ) END,
        'updatedAt', to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
    );
    -- The image changes only when a result lands; until then the node keeps its last good one.
    IF NEW.status = 'completed' THEN
        _patch := _patch || jsonb_build_object(
            'imageUrl', NEW.result_image_url, 'thumbnailUrl', NEW.thumbnail_url,
            'imageKey', NEW.result_key, 'thumbnailKey', NEW.thumbnail_key
        );
    END IF;
    -- A new generation becomes the node's current one; a change of any other generation lands
    -- only while it is still current (or the current one is gone). The check runs on the locked
    -- row (ON CONFLICT ... WHERE), so it cannot interleave with a newer generation's insert.
    INSERT INTO workflow_nodes (id, workflow_id, workspace_id, node_type, node_data)
    VALUES (NEW.node_id, NEW.workflow_id, NEW.workspace_id, 'image_generation', _patch)
    ON CONFLICT (workflow_id, id) DO UPDATE
        SET node_data = workflow_nodes.node_data || excluded.node_data,
            updated_at = now()
        WHERE workflow_nodes.workspace_id IS NOT DISTINCT FROM excluded.workspace_id
          AND (
              TG_OP = 'INSERT'
              OR workflow_nodes.node_data->>'generationId' IS NULL
              OR workflow_nodes.node_data->>'generationId' = NEW.id::text
              OR NOT EXISTS (
                  SELECT 1 FROM image_generations current
                  WHERE current.id = imagejobs_uuid_or_null(workflow_nodes.node_data->>'generationId')
              )
          );
    RETURN NULL;
END;
$$;
