-- Named queries on workspace_members (Supabase users' workspaces).
-- Each starts with "-- name: <name>", unique across sql/queries/; parameters are psycopg
-- named placeholders. Nothing here is a migration.

-- name: user_workspaces
SELECT workspace_id FROM workspace_members WHERE user_id = %(user_id)s;
