-- Named queries on image_generations: create, read, the worker's compare-and-set steps, rescue.
-- Each starts with "-- name: <name>", unique across sql/queries/; parameters are psycopg
-- named placeholders. Nothing here is a migration.

-- name: insert_generation
INSERT INTO image_generations (
    workspace_id, user_id, project_id, prompt, prompt_spec, provider, model, original_image_url,
    node_id, workflow_id, webhook_url, webhook_events_filter, idempotency_key, metadata
) VALUES (
    %(workspace_id)s, %(user_id)s, %(project_id)s, %(prompt)s, %(prompt_spec)s, %(provider)s,
    %(model)s, %(original_image_url)s, %(node_id)s, %(workflow_id)s, %(webhook_url)s,
    %(webhook_events_filter)s, %(idempotency_key)s, %(metadata)s
)
RETURNING *;

-- name: get_generation_by_idempotency_key
SELECT * FROM image_generations
WHERE workspace_id = %(workspace_id)s AND idempotency_key = %(idempotency_key)s;

-- name: get_generation
SELECT * FROM image_generations
WHERE id = %(id)s AND workspace_id = %(workspace_id)s;

-- name: list_generations
SELECT * FROM image_generations
WHERE workspace_id = %(workspace_id)s
  AND (%(project_id)s::uuid IS NULL OR project_id = %(project_id)s)
  AND (%(status)s::text IS NULL OR status = %(status)s)
  AND (%(cursor_ts)s::timestamptz IS NULL OR (created_at, id) < (%(cursor_ts)s, %(cursor_id)s::uuid))
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s;

-- name: get_generation_for_worker
SELECT * FROM image_generations WHERE id = %(id)s;

-- name: start_generation
-- pending -> processing at the fetching step; a re-run of a processing one (crash, retry,
-- rate-limit resume) starts over. Anything else (cancelled, terminal, gone) returns no row.
UPDATE image_generations
SET status = 'processing', step = 'fetching', progress = 10, attempts = attempts + %(count_attempt)s,
    error_code = NULL, error_message = NULL
WHERE id = %(id)s AND status IN ('pending', 'processing')
RETURNING *;

-- name: advance_to_processing
-- Pipelined right after start_generation: nothing to fetch, so on to the provider.
UPDATE image_generations
SET step = 'processing', progress = %(progress)s
WHERE id = %(id)s AND status = 'processing' AND step = 'fetching'
  AND original_image_url IS NULL AND provider = ANY(%(providers)s)
RETURNING id;

-- name: set_step
UPDATE image_generations
SET step = %(step)s, progress = %(progress)s
WHERE id = %(id)s AND status = 'processing'
RETURNING id;

-- name: set_provider_job
UPDATE image_generations SET provider_job_id = %(provider_job_id)s
WHERE id = %(id)s AND status = 'processing'
RETURNING id;

-- name: complete_generation
UPDATE image_generations
SET status = 'completed', result_image_url = %(result_image_url)s,
    metadata = metadata || %(metadata)s
WHERE id = %(id)s AND status = 'processing'
RETURNING id;

-- name: fail_generation
UPDATE image_generations
SET status = 'failed', error_code = %(error_code)s, error_message = %(error_message)s
WHERE id = %(id)s AND status IN ('pending', 'processing')
RETURNING id;

-- name: reschedule_generation
-- Hands the generation to a new job that starts after %(delay_s)s (rate limit, polling), so
-- the current job ends and frees its worker slot instead of sleeping in it.
UPDATE image_generations
SET job_id = (procrastinate_defer_jobs_v1(ARRAY[ROW(
        'images', %(task_name)s, 0, 'generation:' || id::text, NULL,
        jsonb_build_object('generation_id', id) || %(args)s,
        clock_timestamp() + make_interval(secs => %(delay_s)s)
    )::procrastinate_job_to_defer_v1]))[1]
WHERE id = %(id)s AND status = 'processing'
RETURNING job_id;

-- name: cancel_generation
UPDATE image_generations SET status = 'cancelled'
WHERE id = %(id)s AND workspace_id = %(workspace_id)s AND status IN ('pending', 'processing')
RETURNING *;

-- name: retry_generation
UPDATE image_generations SET status = 'pending'
WHERE id = %(id)s AND workspace_id = %(workspace_id)s AND status = 'failed'
RETURNING *;

-- name: list_versions
-- The whole edit history a generation belongs to: its root and every edit of that root.
WITH target AS (
    SELECT coalesce(parent_id, id) AS root FROM image_generations
    WHERE id = %(id)s AND workspace_id = %(workspace_id)s
)
SELECT g.* FROM image_generations g, target
WHERE g.workspace_id = %(workspace_id)s AND (g.id = target.root OR g.parent_id = target.root)
ORDER BY g.version, g.created_at;

-- name: insert_edit
INSERT INTO image_generations (
    workspace_id, user_id, project_id, prompt, prompt_spec, provider, model, original_image_url,
    node_id, workflow_id, webhook_url, webhook_events_filter, version, parent_id, metadata,
    edit_mode, edited_from
)
SELECT workspace_id, %(user_id)s, project_id, %(prompt)s, prompt_spec, provider, model,
       result_image_url, node_id, workflow_id, webhook_url, webhook_events_filter,
       (SELECT max(version) + 1 FROM image_generations h
         WHERE h.id = coalesce(g.parent_id, g.id) OR h.parent_id = coalesce(g.parent_id, g.id)),
       coalesce(parent_id, id),
       %(metadata)s, %(edit_mode)s, id
FROM image_generations g
WHERE id = %(id)s AND workspace_id = %(workspace_id)s AND status = 'completed'
RETURNING *;

-- name: set_mask_url
UPDATE image_generations SET mask_url = %(mask_url)s
WHERE id = %(id)s
RETURNING *;

-- name: find_by_provider_job
SELECT * FROM image_generations WHERE provider_job_id = %(provider_job_id)s
ORDER BY created_at DESC LIMIT 1;

-- name: rescue_orphaned_generations
-- Pending or processing generations whose job is gone (deleted, failed outside our control,
-- cancelled by hand): give them a new job. The attempt limit is enforced when it runs.
WITH orphans AS (
    SELECT g.id FROM image_generations g
    LEFT JOIN procrastinate_jobs j ON j.id = g.job_id
    WHERE g.status IN ('pending', 'processing')
      AND g.updated_at < now() - make_interval(secs => %(grace_s)s)
      AND (j.id IS NULL OR j.status NOT IN ('todo', 'doing'))
    ORDER BY g.updated_at
    LIMIT 500
    FOR UPDATE OF g SKIP LOCKED
)
UPDATE image_generations g
SET job_id = imagejobs_defer_generation(g.id, imagejobs_task_for(g.edit_mode))
FROM orphans WHERE g.id = orphans.id
RETURNING g.id;
