-- Named queries on imagejobs_batches: a batch of generations created in one transaction.
-- Each starts with "-- name: <name>", unique across sql/queries/; parameters are psycopg
-- named placeholders. Nothing here is a migration.

-- name: insert_batch
INSERT INTO imagejobs_batches (workspace_id, idempotency_key, size)
VALUES (%(workspace_id)s, %(idempotency_key)s, %(size)s)
RETURNING id;

-- name: get_batch_by_idempotency_key
SELECT id FROM imagejobs_batches
WHERE workspace_id = %(workspace_id)s AND idempotency_key = %(idempotency_key)s;

-- name: list_batch_generations
SELECT * FROM image_generations
WHERE batch_id = %(batch_id)s AND workspace_id = %(workspace_id)s
ORDER BY batch_index;
