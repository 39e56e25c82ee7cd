-- Named queries on quotas: workspace_limits and the usage functions of sql/migrations/018.
-- Each starts with "-- name: <name>", unique across sql/queries/; parameters are psycopg
-- named placeholders. Nothing here is a migration.

-- name: get_workspace_limits
SELECT workspace_id, generations_per_day, usd_per_day::float8 AS usd_per_day, max_concurrency,
       updated_at
FROM workspace_limits
WHERE workspace_id = %(workspace_id)s;

-- name: set_workspace_limits
-- `imagejobs quota set`: only the limits named (set_<limit> true) change; NULL clears one. A
-- workspace without a row gets one, unnamed limits unlimited.
INSERT INTO workspace_limits AS l (workspace_id, generations_per_day, usd_per_day, max_concurrency)
VALUES (%(workspace_id)s,
        CASE WHEN %(set_generations_per_day)s THEN %(generations_per_day)s::integer END,
        CASE WHEN %(set_usd_per_day)s THEN %(usd_per_day)s::numeric END,
        CASE WHEN %(set_max_concurrency)s THEN %(max_concurrency)s::integer END)
ON CONFLICT (workspace_id) DO UPDATE SET
    generations_per_day = CASE WHEN %(set_generations_per_day)s
                               THEN excluded.generations_per_day ELSE l.generations_per_day END,
    usd_per_day = CASE WHEN %(set_usd_per_day)s THEN excluded.usd_per_day ELSE l.usd_per_day END,
    max_concurrency = CASE WHEN %(set_max_concurrency)s
                           THEN excluded.max_concurrency ELSE l.max_concurrency END,
    updated_at = now()
RETURNING workspace_id, generations_per_day, usd_per_day::float8 AS usd_per_day, max_concurrency,
          updated_at;

-- name: workspace_usage
-- GET /v1/usage and the API's 429: the current UTC day's use, next to the limits.
SELECT u.window_start, u.window_end, u.generations, u.estimated_usd::float8 AS estimated_usd,
       l.generations_per_day, l.usd_per_day::float8 AS usd_per_day, l.max_concurrency
FROM imagejobs_workspace_usage(%(workspace_id)s) u
LEFT JOIN workspace_limits l ON l.workspace_id = %(workspace_id)s;
