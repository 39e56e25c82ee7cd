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

-- The node trigger carries the keys beside the URLs (`imageKey`, `thumbnailKey`), so a reader
-- can sign a fresh URL for its image: see its current text in 028.
