-- Named queries on api_keys.
-- Each starts with "-- name: <name>", unique across sql/queries/; parameters are psycopg
-- named placeholders. Nothing here is a migration.

-- name: find_api_key
SELECT id, workspace_id FROM api_keys
WHERE key_hash = %(key_hash)s AND revoked_at IS NULL;

-- name: touch_api_key
UPDATE api_keys SET last_used_at = now() WHERE id = %(id)s;

-- name: insert_api_key
INSERT INTO api_keys (workspace_id, name, prefix, key_hash)
VALUES (%(workspace_id)s, %(name)s, %(prefix)s, %(key_hash)s)
RETURNING id;

-- name: list_api_keys
SELECT id, workspace_id, prefix, name, created_at, last_used_at, revoked_at FROM api_keys
WHERE workspace_id = %(workspace_id)s
ORDER BY created_at, id;

-- name: find_api_keys_to_revoke
-- The keys a `revoke` argument names: its id, its printed prefix, or the whole key (by hash).
SELECT id, workspace_id, prefix, name, created_at, last_used_at, revoked_at FROM api_keys
WHERE id = %(id)s OR prefix = %(prefix)s OR key_hash = %(key_hash)s
ORDER BY created_at, id;

-- name: revoke_api_key
UPDATE api_keys SET revoked_at = now()
WHERE id = %(id)s AND revoked_at IS NULL
RETURNING revoked_at;
