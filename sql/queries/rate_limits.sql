-- Named queries on Provider and API rate limits (the functions of sql/migrations/003 and 012).
-- Each starts with "-- name: <name>", unique across sql/queries/; parameters are psycopg
-- named placeholders. Nothing here is a migration.

-- name: acquire_rate
SELECT granted, wait_s, granted_at
FROM imagejobs_acquire_rate(%(provider)s, %(max_requests)s, %(window_s)s);

-- name: hit_api_rate
SELECT allowed, remaining, reset_s
FROM imagejobs_hit_api_rate(%(rate_key)s, %(max_requests)s, %(window_s)s);
