-- Named queries that defer procrastinate jobs directly (not through a generation's triggers).
-- Each starts with "-- name: <name>", unique across sql/queries/; parameters are psycopg
-- named placeholders. Nothing here is a migration.

-- name: defer_webhook_result
SELECT (procrastinate_defer_jobs_v1(ARRAY[ROW(
    'images', 'finish_from_webhook', 0, NULL, NULL,
    jsonb_build_object('generation_id', %(generation_id)s::uuid, 'delivery_id', %(delivery_id)s::text),
    NULL
)::procrastinate_job_to_defer_v1]))[1] AS job_id;
