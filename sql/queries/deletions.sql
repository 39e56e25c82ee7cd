-- Named queries of deletes (sql/migrations/025): generations and projects, and their audit
-- rows in imagejobs_deletions.
-- Each starts with "-- name: <name>", unique across sql/queries/; parameters are psycopg
-- named placeholders. Nothing here is a migration.

-- name: deletion_targets
-- The generation, or with %(cascade)s its whole history (root and every version).
WITH target AS (
    SELECT id, coalesce(parent_id, id) AS root FROM image_generations
    WHERE id = %(id)s AND workspace_id = %(workspace_id)s
)
SELECT g.* FROM image_generations g, target
WHERE g.workspace_id = %(workspace_id)s
  AND (g.id = target.id OR (%(cascade)s AND (g.id = target.root OR g.parent_id = target.root)))
ORDER BY g.version, g.created_at, g.id;

-- name: generations_by_ids
SELECT * FROM image_generations
WHERE id = ANY (%(ids)s::uuid[]) AND workspace_id = %(workspace_id)s
ORDER BY id;

-- name: cancel_for_delete
-- The cancel path (the trigger cancels or aborts the job and asks a provider to stop).
UPDATE image_generations SET status = 'cancelled', error_message = 'Deleted'
WHERE id = ANY (%(ids)s::uuid[]) AND workspace_id = %(workspace_id)s
  AND status IN ('pending', 'processing')
RETURNING id;

-- name: jobs_running
-- Of these procrastinate jobs, how many a worker still runs.
SELECT count(*) FROM procrastinate_jobs
WHERE id = ANY (%(job_ids)s::bigint[]) AND status = 'doing';

-- name: delete_generations
SELECT id, project_id FROM imagejobs_delete_generations(
    %(workspace_id)s, %(ids)s::uuid[], %(seen)s::timestamptz[], %(whole_history)s
);

-- name: insert_deletion
INSERT INTO imagejobs_deletions (workspace_id, kind, target_id, deleted_by, status, deleted_at, detail)
VALUES (%(workspace_id)s, %(kind)s, %(target_id)s, %(deleted_by)s, 'done', now(), %(detail)s)
RETURNING *;

-- name: get_deletion
SELECT * FROM imagejobs_deletions WHERE id = %(id)s AND workspace_id = %(workspace_id)s;

-- name: get_deletion_for_worker
SELECT * FROM imagejobs_deletions WHERE id = %(id)s;

-- name: start_project_deletion
-- Marks the project (hidden, refuses new generations), records the delete and defers the job
-- that carries it out, in one statement; no row when the project is not there or already
-- being deleted.
WITH marked AS (
    UPDATE projects SET deleting_at = now()
    WHERE id = %(id)s AND workspace_id = %(workspace_id)s AND deleting_at IS NULL
    RETURNING id, workspace_id
), next AS (
    SELECT nextval(pg_get_serial_sequence('imagejobs_deletions', 'id')) AS id
)
INSERT INTO imagejobs_deletions (id, workspace_id, kind, target_id, deleted_by, status, job_id)
SELECT next.id, marked.workspace_id, 'project', marked.id, %(deleted_by)s, 'running',
       (procrastinate_defer_jobs_v1(ARRAY[ROW(
           'images', 'delete_project', 0, 'project-delete:' || marked.id::text, NULL,
           jsonb_build_object('deletion_id', next.id), NULL
       )::procrastinate_job_to_defer_v1]))[1]
FROM marked, next
RETURNING *;

-- name: resume_project_deletion
-- A repeated DELETE of a project whose delete is recorded as running: a new job when the
-- last one is no longer queued or running (it gave up, e.g. on storage failing too long).
UPDATE imagejobs_deletions d
SET job_id = CASE WHEN EXISTS (
        SELECT 1 FROM procrastinate_jobs j WHERE j.id = d.job_id AND j.status IN ('todo', 'doing')
    ) THEN d.job_id ELSE (procrastinate_defer_jobs_v1(ARRAY[ROW(
        'images', 'delete_project', 0, 'project-delete:' || d.target_id::text, NULL,
        jsonb_build_object('deletion_id', d.id), NULL
    )::procrastinate_job_to_defer_v1]))[1] END
WHERE d.target_id = %(id)s AND d.workspace_id = %(workspace_id)s
  AND d.kind = 'project' AND d.status = 'running'
RETURNING *;

-- name: project_generation_batch
SELECT id FROM image_generations WHERE project_id = %(project_id)s
ORDER BY created_at, id
LIMIT %(limit)s;

-- name: record_deletion_progress
-- Merges progress into the delete's detail and tells the project stream (channel
-- project_status: the project's counters plus `deletion`).
WITH d AS (
    UPDATE imagejobs_deletions SET detail = detail || %(detail)s
    WHERE id = %(id)s
    RETURNING *
)
SELECT pg_notify('project_status', (
    jsonb_build_object(
        'project_id', p.id, 'workspace_id', p.workspace_id, 'status', p.status,
        'image_count', p.image_count, 'pending_count', p.pending_count,
        'processing_count', p.processing_count, 'completed_count', p.completed_count,
        'failed_count', p.failed_count, 'cancelled_count', p.cancelled_count,
        'updated_at', p.updated_at, 'deleting_at', p.deleting_at,
        'deletion', jsonb_build_object('id', d.id, 'status', d.status) || d.detail
    )
)::text)
FROM d JOIN projects p ON p.id = d.target_id;

-- name: finish_project_deletion
-- The project row, once it has no generation left, and the delete marked done; the stream
-- hears `deleted: true`. No row while generations remain.
WITH gone AS (
    DELETE FROM projects p
    WHERE p.id = (SELECT target_id FROM imagejobs_deletions WHERE id = %(id)s AND kind = 'project')
      AND NOT EXISTS (SELECT 1 FROM image_generations g WHERE g.project_id = p.id)
    RETURNING p.id, p.workspace_id
), done AS (
    UPDATE imagejobs_deletions SET status = 'done', deleted_at = now(), detail = detail || %(detail)s
    WHERE id = %(id)s AND EXISTS (SELECT 1 FROM gone)
    RETURNING *
)
SELECT done.id, pg_notify('project_status', jsonb_build_object(
    'project_id', gone.id, 'workspace_id', gone.workspace_id, 'deleted', true,
    'deletion', jsonb_build_object('id', done.id, 'status', done.status) || done.detail
)::text)
FROM gone, done;

-- name: workspace_project_ids
-- Every project of a workspace, those being deleted included (erasing a workspace).
SELECT id FROM projects WHERE workspace_id = %(workspace_id)s ORDER BY created_at, id;

-- name: keys_in_use
-- Of these storage keys, those a generation outside %(ids)s still uses: a regeneration of an
-- edit shares its mask. Versions share files only within a history, so only the histories of
-- %(ids)s are read (the root-version index).
WITH roots AS (
    SELECT DISTINCT coalesce(parent_id, id) AS root FROM image_generations
    WHERE id = ANY (%(ids)s::uuid[]) AND workspace_id = %(workspace_id)s
)
SELECT DISTINCT k.key FROM unnest(%(keys)s::text[]) AS k(key)
JOIN image_generations g ON g.workspace_id = %(workspace_id)s
    AND coalesce(g.parent_id, g.id) IN (SELECT root FROM roots)
    AND NOT (g.id = ANY (%(ids)s::uuid[]))
    AND k.key IN (g.result_key, g.thumbnail_key, g.mask_key, imagejobs_storage_key_of(g.mask_url));
