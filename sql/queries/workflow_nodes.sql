-- Named queries on workflow_nodes.
-- Each starts with "-- name: <name>", unique across sql/queries/; parameters are psycopg
-- named placeholders. Nothing here is a migration.

-- name: workflow_nodes
SELECT id, node_type, node_data, position, updated_at FROM workflow_nodes
WHERE workflow_id = %(workflow_id)s AND workspace_id = %(workspace_id)s
  AND (%(ids)s::text[] IS NULL OR id = ANY (%(ids)s::text[]))
ORDER BY id;

-- name: workflow_visible
SELECT EXISTS (SELECT 1 FROM workflow_nodes WHERE workflow_id = %(workflow_id)s AND workspace_id = %(workspace_id)s)
    OR EXISTS (SELECT 1 FROM image_generations WHERE workflow_id = %(workflow_id)s AND workspace_id = %(workspace_id)s);
