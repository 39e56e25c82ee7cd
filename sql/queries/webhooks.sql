-- Named queries on webhook_deliveries (incoming, from providers) and outgoing_webhook_attempts.
-- Each starts with "-- name: <name>", unique across sql/queries/; parameters are psycopg
-- named placeholders. Nothing here is a migration.

-- name: record_webhook_delivery
INSERT INTO webhook_deliveries (id, provider, generation_id, payload)
VALUES (%(id)s, %(provider)s, %(generation_id)s, %(payload)s)
ON CONFLICT (id) DO NOTHING
RETURNING id;

-- name: receive_webhook
-- Record, de-duplicate and defer a provider callback in one round trip (sql/migrations/026):
-- 'accepted', 'duplicate', 'unknown_job' or 'ignored'.
SELECT imagejobs_receive_webhook(%(id)s, %(provider)s, %(provider_job_id)s, %(payload)s, %(state)s);

-- name: get_webhook_delivery
SELECT provider, payload FROM webhook_deliveries WHERE id = %(id)s;

-- name: record_webhook_attempt
INSERT INTO outgoing_webhook_attempts
    (generation_id, event_id, message_id, type, attempt, status_code, error, duration_ms)
VALUES (%(generation_id)s, %(event_id)s, %(message_id)s, %(type)s, %(attempt)s, %(status_code)s,
        %(error)s, %(duration_ms)s);
