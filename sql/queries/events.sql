-- Named queries on image_events: a generation's events, a project's commit-ordered cursor.
-- Each starts with "-- name: <name>", unique across sql/queries/; parameters are psycopg
-- named placeholders. Nothing here is a migration.

-- name: log_event
-- FOR UPDATE: every writer of a generation's events holds its row lock until commit, so within
-- a generation event ids are in commit order (what Last-Event-ID resume relies on).
INSERT INTO image_events (generation_id, project_id, workspace_id, kind, status, step, progress, message, data)
SELECT id, project_id, workspace_id, %(kind)s, status, step, progress, %(message)s, %(data)s
FROM image_generations WHERE id = %(id)s
FOR UPDATE
RETURNING id;

-- name: latest_state_event
SELECT * FROM image_events
WHERE generation_id = %(generation_id)s AND kind IN ('status', 'progress')
ORDER BY id DESC
LIMIT 1;

-- name: generation_events_after
SELECT * FROM image_events
WHERE generation_id = %(generation_id)s AND id > %(after_id)s
ORDER BY id
LIMIT %(limit)s;

-- name: generation_last_event_id
SELECT max(id) FROM image_events WHERE generation_id = %(generation_id)s;

-- name: project_events_after
-- Commit-ordered: events past the cursor, `ready` once their transaction is older than every
-- running one (the horizon). Readers send the ready ones; a committed one that is not ready yet
-- tells them to look again soon (it has no other notification to wait for).
SELECT e.*, e.txid < pg_snapshot_xmin(pg_current_snapshot()) AS ready FROM image_events e
WHERE e.project_id = %(project_id)s
  AND (e.txid, e.id) > (%(txid)s::text::xid8, %(after_id)s)
ORDER BY e.txid, e.id
LIMIT %(limit)s;

-- name: project_cursor_of_event
SELECT txid::text FROM image_events WHERE id = %(id)s AND project_id = %(project_id)s;

-- name: project_cursor_now
-- Where a new stream starts: after the project's latest event that can no longer be preceded
-- (its transaction is below the horizon), so the position is a real event id a client can resume
-- from; a project without such an event starts from the beginning (0).
SELECT txid::text, id FROM image_events
WHERE project_id = %(project_id)s AND txid < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY txid DESC, id DESC
LIMIT 1;

-- name: latest_project_event_id
SELECT coalesce(max(id), 0) FROM image_events WHERE project_id = %(project_id)s;
