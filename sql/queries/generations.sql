-- Named queries on image_generations: create, read, the worker's compare-and-set steps, rescue.
-- Each starts with "-- name: <name>", unique across sql/queries/; parameters are psycopg
-- named placeholders. Nothing here is a migration.

-- name: insert_generation
INSERT INTO image_generations (
    workspace_id, user_id, project_id, prompt, prompt_spec, provider, model, original_image_url,
    node_id, workflow_id, webhook_url, webhook_events_filter, idempotency_key, metadata, priority,
    batch_id, batch_index, run_at, deadline_at
) VALUES (
    %(workspace_id)s, %(user_id)s, %(project_id)s, %(prompt)s, %(prompt_spec)s, %(provider)s,
    %(model)s, %(original_image_url)s, %(node_id)s, %(workflow_id)s, %(webhook_url)s,
    %(webhook_events_filter)s, %(idempotency_key)s, %(metadata)s, %(priority)s,
    %(batch_id)s, %(batch_index)s, %(run_at)s,
    -- The deadline counts from when it may start: now, or its run_at.
    greatest(coalesce(%(run_at)s::timestamptz, now()), now())
        + make_interval(secs => %(deadline_s)s::float8)
)
RETURNING *;

-- name: get_generation_by_idempotency_key
SELECT * FROM image_generations
WHERE workspace_id = %(workspace_id)s AND idempotency_key = %(idempotency_key)s;

-- name: get_generation
SELECT g.*, CASE WHEN g.status = 'pending' THEN imagejobs_queue_position(g.job_id) END AS queue_position
FROM image_generations g
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
-- rate-limit resume) starts over. Anything else (cancelled, terminal, gone), or a workspace at
-- its max_concurrency (sql/migrations/022), returns no row.
UPDATE image_generations
SET status = 'processing', step = 'fetching', progress = 10, attempts = attempts + %(count_attempt)s,
    error_code = NULL, error_message = NULL
WHERE id = %(id)s AND status IN ('pending', 'processing')
  AND imagejobs_slot_free(workspace_id, id)
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
SET status = 'completed', result_image_url = %(result_image_url)s, result_key = %(result_key)s,
    thumbnail_url = %(thumbnail_url)s, thumbnail_key = %(thumbnail_key)s,
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
-- Failed (timed-out included) or cancelled -> pending: the trigger resets the attempt budget
-- and defers a new job.
UPDATE image_generations SET status = 'pending'
WHERE id = %(id)s AND workspace_id = %(workspace_id)s AND status IN ('failed', 'cancelled')
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
    edit_mode, edited_from, priority, original_key
)
SELECT workspace_id, %(user_id)s, project_id, %(prompt)s, prompt_spec, provider, model,
       result_image_url, node_id, workflow_id, webhook_url, webhook_events_filter,
       1,  -- the version trigger numbers it within its history, under a lock
       coalesce(parent_id, id),
       %(metadata)s, %(edit_mode)s, id, priority, result_key
FROM image_generations g
WHERE id = %(id)s AND workspace_id = %(workspace_id)s AND status = 'completed'
RETURNING *;

-- name: insert_regeneration
-- The next version of the generation's history, on the same node: its inputs, with the prompt,
-- spec, provider or model the request changes (NULL keeps). A new spec without a prompt gets
-- its prompt composed by the insert trigger; a new provider without a model, its default. The
-- node trigger then cancels older unfinished work on the node.
INSERT INTO image_generations (
    workspace_id, user_id, project_id, prompt, prompt_spec, provider, model, original_image_url,
    node_id, workflow_id, webhook_url, webhook_events_filter, version, parent_id, metadata,
    edit_mode, mask_url, edited_from, priority, mask_key, original_key
)
SELECT workspace_id, %(user_id)s, project_id,
       CASE WHEN %(prompt)s::text IS NOT NULL THEN %(prompt)s::text
            WHEN %(prompt_spec)s::jsonb IS NOT NULL THEN NULL
            ELSE prompt END,
       coalesce(%(prompt_spec)s::jsonb, prompt_spec),
       coalesce(%(provider)s::text, provider),
       CASE WHEN %(model)s::text IS NOT NULL THEN %(model)s::text
            WHEN %(provider)s::text IS DISTINCT FROM provider AND %(provider)s::text IS NOT NULL THEN ''
            ELSE model END,
       original_image_url, node_id, workflow_id, webhook_url, webhook_events_filter,
       1, coalesce(parent_id, id),
       (metadata - 'model') || jsonb_build_object('regeneratedFrom', id::text),
       edit_mode, mask_url, edited_from, priority, mask_key, original_key
FROM image_generations
WHERE id = %(id)s AND workspace_id = %(workspace_id)s
RETURNING *;

-- name: set_mask
UPDATE image_generations SET mask_url = %(mask_url)s, mask_key = %(mask_key)s
WHERE id = %(id)s
RETURNING *;

-- name: give_up_on_exhausted_generations
-- Unfinished generations out of attempts whose job died with its worker (or is gone): failed
-- with `timeout` instead of run again; the status event carries the message.
UPDATE image_generations g
SET status = 'failed', error_code = 'timeout',
    error_message = format('Gave up after %%s attempts: the worker running it stopped each time', g.attempts)
WHERE g.status IN ('pending', 'processing') AND g.attempts >= %(max_attempts)s
  AND (g.job_id = ANY (%(stalled_job_ids)s::bigint[])
       OR (g.updated_at < now() - make_interval(secs => %(grace_s)s)
           AND NOT EXISTS (SELECT 1 FROM procrastinate_jobs j
                           WHERE j.id = g.job_id AND j.status IN ('todo', 'doing'))))
RETURNING g.id;

-- name: rescue_orphaned_generations
-- Pending or processing generations whose job is gone (deleted, failed outside our control,
-- cancelled by hand): give them a new job. Those out of attempts were failed just before.
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

-- name: expire_generation
SELECT imagejobs_expire_generation(%(id)s);

-- name: wait_for_slot
-- A run refused a slot (its workspace at max_concurrency) goes back to the queue for
-- %(delay_s)s seconds with the same place in it (the job's priority); the current job ends.
UPDATE image_generations g
SET job_id = (procrastinate_defer_jobs_v1(ARRAY[ROW(
        'images', imagejobs_task_for(g.edit_mode),
        coalesce((SELECT j.priority FROM procrastinate_jobs j WHERE j.id = g.job_id), 0),
        'generation:' || g.id::text, NULL,
        jsonb_build_object('generation_id', g.id),
        clock_timestamp() + make_interval(secs => %(delay_s)s)
    )::procrastinate_job_to_defer_v1]))[1]
WHERE g.id = %(id)s AND g.status IN ('pending', 'processing')
RETURNING g.job_id;

-- name: queue_position
SELECT CASE WHEN status = 'pending' THEN imagejobs_queue_position(job_id) END
FROM image_generations WHERE id = %(id)s;

-- name: bulk_change
-- Every generation of the workspace in %(statuses)s that the filter matches, moved to
-- %(to_status)s: `cancelled` (the trigger cancels or aborts each job and asks queue-based
-- providers to stop) or `pending` (a retry: a fresh attempt budget and a new job); the count.
WITH targets AS (
    -- Locked by id first, the order group commit locks in (sql/migrations/030): a bulk
    -- action and a worker's group take rows in one order, so they cannot deadlock.
    SELECT id FROM image_generations
    WHERE workspace_id = %(workspace_id)s
      AND status = ANY (%(statuses)s::text[])
      AND (%(project_id)s::uuid IS NULL OR project_id = %(project_id)s::uuid)
      AND (%(created_before)s::timestamptz IS NULL OR created_at < %(created_before)s::timestamptz)
      AND (%(created_after)s::timestamptz IS NULL OR created_at > %(created_after)s::timestamptz)
    ORDER BY id
    FOR NO KEY UPDATE
), hit AS (
    UPDATE image_generations SET status = %(to_status)s
    WHERE id IN (SELECT id FROM targets)
      AND status = ANY (%(statuses)s::text[])
    RETURNING 1
)
SELECT count(*) FROM hit;

-- The same compare-and-set writes for many generations at once, for the worker's group commit
-- (worker/queue/committer.py): one call each, which locks the rows in a fixed order first
-- (sql/migrations/030). Each returns what it wrote; a generation the write did not match
-- (cancelled, finished, gone) is absent, as with the one-row writes above.

-- name: start_generations
SELECT * FROM imagejobs_start_generations(
    %(ids)s::uuid[], %(count_attempts)s::int[], %(advance_providers)s::text[], %(progresses)s::int[]
);

-- name: set_steps
SELECT * FROM imagejobs_set_steps(%(ids)s::uuid[], %(steps)s::text[], %(progresses)s::int[]);

-- name: complete_generations
SELECT * FROM imagejobs_complete_generations(
    %(ids)s::uuid[], %(result_image_urls)s::text[], %(result_keys)s::text[],
    %(thumbnail_urls)s::text[], %(thumbnail_keys)s::text[], %(metadata)s::jsonb[],
    %(saving_progresses)s::int[]
);

-- name: fail_generations
SELECT * FROM imagejobs_fail_generations(
    %(ids)s::uuid[], %(error_codes)s::text[], %(error_messages)s::text[]
);
