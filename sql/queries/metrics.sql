-- Named queries on Aggregates read at /metrics scrape time.
-- Each starts with "-- name: <name>", unique across sql/queries/; parameters are psycopg
-- named placeholders. Nothing here is a migration.

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

-- name: metrics_model_shutdowns
-- Defaults with a shutdown date (and deprecated ones without): operators hear before users do.
SELECT provider, model, status, shutdown_date, (shutdown_date - current_date) AS days
FROM models
WHERE is_default AND (shutdown_date IS NOT NULL OR status <> 'active')
ORDER BY provider;
