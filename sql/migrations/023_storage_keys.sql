-- Issue 17: the storage key is the truth about a stored file.
--
-- A URL is how a file is served today; the key (`<workspace>/<project>/<generation>.<ext>`) is
-- where it is. With a private bucket the URL written at completion is a signed one that dies
-- after SUPABASE_SIGNED_URL_TTL_S, so readers (the API, the workflow stream, outgoing webhooks)
-- sign a fresh URL from the key; deletes and retention remove files by key. The URL columns stay,
-- as written when the file was stored, for plain-SQL readers of public buckets.

CREATE FUNCTION imagejobs_is_storage_key(value text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT value IS NULL OR (
        value ~ '^[A-Za-z0-9][A-Za-z0-9._/-]*$'
        AND NOT ('..' = ANY (string_to_array(value, '/')))
        AND length(value) <= 1024
    )
    $$;

-- The key of a file this project stored, from a URL it handed out: local files (`/files/<key>`)
-- and Supabase public or signed object URLs (`/object/public|sign/<bucket>/<key>`). NULL for
-- anything else (a client's own URL is not ours to delete).
CREATE FUNCTION imagejobs_storage_key_of(url text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT CASE WHEN imagejobs_is_storage_key(key) THEN key END
    FROM (
        SELECT coalesce(
            substring(url FROM '^https?://[^?#]*/files/([^?#]+)'),
            substring(url FROM '^https?://[^?#]*/storage/v1/object/(?:public|sign)/[^/?#]+/([^?#]+)')
        ) AS key
    ) found
    $$;

ALTER TABLE image_generations
    ADD COLUMN result_key text
        CONSTRAINT image_generations_result_key_check CHECK (imagejobs_is_storage_key(result_key)),
    ADD COLUMN thumbnail_key text
        CONSTRAINT image_generations_thumbnail_key_check CHECK (imagejobs_is_storage_key(thumbnail_key)),
    ADD COLUMN mask_key text
        CONSTRAINT image_generations_mask_key_check CHECK (imagejobs_is_storage_key(mask_key)),
    ADD COLUMN original_key text
        CONSTRAINT image_generations_original_key_check CHECK (imagejobs_is_storage_key(original_key));

COMMENT ON COLUMN image_generations.result_key IS 'where the result is stored (the truth); result_image_url is how it was served when written';
COMMENT ON COLUMN image_generations.thumbnail_key IS 'where the thumbnail is stored';
COMMENT ON COLUMN image_generations.mask_key IS 'where an edit''s uploaded mask is stored';
COMMENT ON COLUMN image_generations.original_key IS 'where an edit''s source (the result it edits) is stored, when it is ours';

UPDATE image_generations
SET result_key = imagejobs_storage_key_of(result_image_url),
    thumbnail_key = imagejobs_storage_key_of(thumbnail_url),
    mask_key = imagejobs_storage_key_of(mask_url),
    original_key = CASE WHEN edited_from IS NOT NULL THEN imagejobs_storage_key_of(original_image_url) END
WHERE result_image_url IS NOT NULL OR thumbnail_url IS NOT NULL OR mask_url IS NOT NULL
   OR original_image_url IS NOT NULL;

-- The node carries the keys beside the URLs, so a reader can sign a fresh URL for its image.
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
    IF TG_OP = 'INSERT' AND NEW.status IN ('pending', 'processing') THEN
        -- The newer generation supersedes older unfinished work on the node, provider work
        -- included (the cancel trigger asks the provider to stop).
        UPDATE image_generations
        SET status = 'cancelled', error_message = format('Superseded by generation %s on node %s', NEW.id, NEW.node_id)
        WHERE workflow_id = NEW.workflow_id AND node_id = NEW.node_id
          AND workspace_id = NEW.workspace_id AND id <> NEW.id
          AND status IN ('pending', 'processing');
    END IF;
    RETURN NULL;
END;
$$;
