-- Named queries used by the API and the worker. Each starts with "-- name: <name>".
-- Parameters are psycopg named placeholders. Nothing here is a migration.

-- name: insert_project
INSERT INTO projects (workspace_id, name)
VALUES (%(workspace_id)s, %(name)s)
RETURNING *;

-- name: get_project
SELECT * FROM projects
WHERE id = %(id)s AND workspace_id = %(workspace_id)s;

-- name: list_projects
SELECT * FROM projects
WHERE workspace_id = %(workspace_id)s
  AND (%(cursor_ts)s::timestamptz IS NULL OR (created_at, id) < (%(cursor_ts)s, %(cursor_id)s::uuid))
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s;

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

-- name: user_workspaces
SELECT workspace_id FROM workspace_members WHERE user_id = %(user_id)s;

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

-- name: log_event
-- FOR UPDATE: every writer of a generation's events holds its row lock until commit, so within
-- a generation event ids are in commit order (what Last-Event-ID resume relies on).
INSERT INTO image_events (generation_id, project_id, workspace_id, kind, status, step, progress, message, data)
SELECT id, project_id, workspace_id, %(kind)s, status, step, progress, %(message)s, %(data)s
FROM image_generations WHERE id = %(id)s
FOR UPDATE
RETURNING id;

-- name: acquire_rate
SELECT granted, wait_s, granted_at
FROM imagejobs_acquire_rate(%(provider)s, %(max_requests)s, %(window_s)s);

-- name: set_provider_job
UPDATE image_generations SET provider_job_id = %(provider_job_id)s
WHERE id = %(id)s AND status = 'processing'
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

-- name: get_generation_for_worker
SELECT * FROM image_generations WHERE id = %(id)s;

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

-- name: record_webhook_delivery
INSERT INTO webhook_deliveries (id, provider, generation_id, payload)
VALUES (%(id)s, %(provider)s, %(generation_id)s, %(payload)s)
ON CONFLICT (id) DO NOTHING
RETURNING id;

-- name: find_by_provider_job
SELECT * FROM image_generations WHERE provider_job_id = %(provider_job_id)s
ORDER BY created_at DESC LIMIT 1;

-- name: record_webhook_attempt
INSERT INTO outgoing_webhook_attempts
    (generation_id, event_id, message_id, type, attempt, status_code, error, duration_ms)
VALUES (%(generation_id)s, %(event_id)s, %(message_id)s, %(type)s, %(attempt)s, %(status_code)s,
        %(error)s, %(duration_ms)s);

-- name: get_project_for_stream
SELECT * FROM projects WHERE id = %(id)s;

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

-- name: set_mask_url
UPDATE image_generations SET mask_url = %(mask_url)s
WHERE id = %(id)s
RETURNING *;

-- name: defer_webhook_result
SELECT (procrastinate_defer_jobs_v1(ARRAY[ROW(
    'images', 'finish_from_webhook', 0, NULL, NULL,
    jsonb_build_object('generation_id', %(generation_id)s::uuid, 'delivery_id', %(delivery_id)s::text),
    NULL
)::procrastinate_job_to_defer_v1]))[1] AS job_id;

-- name: get_webhook_delivery
SELECT provider, payload FROM webhook_deliveries WHERE id = %(id)s;

-- name: latest_project_event_id
SELECT coalesce(max(id), 0) FROM image_events WHERE project_id = %(project_id)s;

-- name: workflow_nodes
SELECT id, node_type, node_data, updated_at FROM workflow_nodes
WHERE workflow_id = %(workflow_id)s AND workspace_id = %(workspace_id)s
  AND (%(ids)s::text[] IS NULL OR id = ANY (%(ids)s::text[]))
ORDER BY id;

-- name: workflow_visible
SELECT EXISTS (SELECT 1 FROM workflow_nodes WHERE workflow_id = %(workflow_id)s AND workspace_id = %(workspace_id)s)
    OR EXISTS (SELECT 1 FROM image_generations WHERE workflow_id = %(workflow_id)s AND workspace_id = %(workspace_id)s);

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

-- name: hit_api_rate
SELECT allowed, remaining, reset_s
FROM imagejobs_hit_api_rate(%(rate_key)s, %(max_requests)s, %(window_s)s);

-- name: metrics_generations
-- Current generations by status/provider/model: one aggregate at scrape time.
SELECT status, provider, model, count(*) AS n
FROM image_generations
GROUP BY status, provider, model;

-- name: metrics_queues
-- Jobs waiting per procrastinate queue and the age of the oldest one (deferral time, else
-- schedule). O(waiting jobs).
SELECT j.queue_name AS queue, count(*) AS depth,
       coalesce(extract(epoch FROM now() - min(coalesce(e.at, j.scheduled_at))), 0)::float8
           AS oldest_age_s
FROM procrastinate_jobs j
LEFT JOIN LATERAL (
    SELECT pe.at FROM procrastinate_events pe
    WHERE pe.job_id = j.id AND pe.type = 'deferred'
    ORDER BY pe.id LIMIT 1
) e ON true
WHERE j.status = 'todo'
GROUP BY j.queue_name;

-- name: metrics_failures
-- Generations that failed inside the window, by provider and error_code (index on finished_at).
SELECT provider, coalesce(error_code, 'unknown') AS error_code, count(*) AS n
FROM image_generations
WHERE finished_at >= now() - make_interval(secs => %(window_s)s) AND status = 'failed'
GROUP BY provider, coalesce(error_code, 'unknown');

-- name: metrics_end_to_end
-- Creation-to-finish latency of generations finished inside the window, bucketed in SQL.
WITH d AS (
    SELECT provider AS label, extract(epoch FROM finished_at - created_at)::float8 AS secs
    FROM image_generations
    WHERE finished_at >= now() - make_interval(secs => %(window_s)s)
      AND status IN ('completed', 'failed')
)
SELECT d.label, b.le, count(*) FILTER (WHERE d.secs <= b.le) AS below, count(*) AS n,
       sum(d.secs) AS total
FROM d CROSS JOIN unnest(%(buckets)s::float8[]) AS b(le)
GROUP BY d.label, b.le;

-- name: metrics_steps
-- Time spent in each step: from a status event to the generation's next status event, for
-- events inside the window (index on ts).
WITH e AS (
    SELECT step, ts,
           lead(ts) OVER (PARTITION BY generation_id ORDER BY ts, id) AS next_ts
    FROM image_events
    WHERE kind = 'status' AND ts >= now() - make_interval(secs => %(window_s)s)
), d AS (
    SELECT step AS label, extract(epoch FROM next_ts - ts)::float8 AS secs
    FROM e WHERE next_ts IS NOT NULL
)
SELECT d.label, b.le, count(*) FILTER (WHERE d.secs <= b.le) AS below, count(*) AS n,
       sum(d.secs) AS total
FROM d CROSS JOIN unnest(%(buckets)s::float8[]) AS b(le)
GROUP BY d.label, b.le;

-- name: metrics_webhooks
-- Outgoing webhook delivery attempts inside the window by outcome (index on sent_at).
SELECT CASE
           WHEN status_code BETWEEN 200 AND 299 THEN 'delivered'
           WHEN status_code IS NOT NULL THEN 'rejected'
           ELSE 'unreachable'
       END AS outcome,
       count(*) AS n
FROM outgoing_webhook_attempts
WHERE sent_at >= now() - make_interval(secs => %(window_s)s)
GROUP BY 1;

-- name: list_models
-- The model catalogue (sql/015), by provider, defaults first, then served before shut down.
SELECT provider, model, status, deprecated_on, shutdown_date, replacement, capabilities,
       is_default, source
FROM models
ORDER BY provider, is_default DESC, status = 'shutdown', model;

-- name: list_providers
SELECT name FROM providers ORDER BY name;

-- name: clear_default_model
-- `imagejobs models default`, first half: the provider's current default steps down.
UPDATE models SET is_default = false, updated_at = now()
WHERE provider = %(provider)s AND is_default AND model <> %(model)s;

-- name: set_default_model
-- ... second half, in the same transaction: the model becomes the default. One the catalogue
-- does not know yet is added as active (providers publish faster than migrations); a shut-down
-- one cannot be a default (models_default_is_served).
INSERT INTO models (provider, model, status, is_default, source)
VALUES (%(provider)s, %(model)s, 'active', true, %(source)s)
ON CONFLICT (provider, model) DO UPDATE SET is_default = true, updated_at = now()
RETURNING provider, model, status, deprecated_on, shutdown_date, replacement, capabilities,
          is_default, source;

-- name: metrics_model_shutdowns
-- Defaults with a shutdown date (and deprecated ones without): operators hear before users do.
SELECT provider, model, status, shutdown_date, (shutdown_date - current_date) AS days
FROM models
WHERE is_default AND (shutdown_date IS NOT NULL OR status <> 'active')
ORDER BY provider;
