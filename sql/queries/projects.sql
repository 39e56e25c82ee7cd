-- Named queries on projects.
-- Each starts with "-- name: <name>", unique across sql/queries/; parameters are psycopg
-- named placeholders. Nothing here is a migration.

-- name: insert_project
INSERT INTO projects (workspace_id, name)
VALUES (%(workspace_id)s, %(name)s)
RETURNING *;

-- name: get_project
-- A project being deleted is hidden (sql/migrations/025).
SELECT * FROM projects
WHERE id = %(id)s AND workspace_id = %(workspace_id)s AND deleting_at IS NULL;

-- name: get_project_even_deleting
SELECT * FROM projects
WHERE id = %(id)s AND workspace_id = %(workspace_id)s;

-- name: list_projects
SELECT * FROM projects
WHERE workspace_id = %(workspace_id)s AND deleting_at IS NULL
  AND (%(cursor_ts)s::timestamptz IS NULL OR (created_at, id) < (%(cursor_ts)s, %(cursor_id)s::uuid))
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s;

-- name: get_project_for_stream
SELECT * FROM projects WHERE id = %(id)s;

-- name: projects_in_workspace
SELECT id FROM projects
WHERE id = ANY (%(ids)s::uuid[]) AND workspace_id = %(workspace_id)s AND deleting_at IS NULL;
