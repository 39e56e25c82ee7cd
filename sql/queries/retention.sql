-- Named queries of the pruner (worker/queue/retention.py): imagejobs_prune (sql/migrations/024)
-- over each table it keeps in check. Each starts with "-- name: <name>", unique across
-- sql/queries/; parameters are psycopg named placeholders. Nothing here is a migration.

-- name: prune_batch
-- At most batch_size of the target's rows older than older_than_s deleted; how many.
SELECT imagejobs_prune(%(target)s, make_interval(secs => %(older_than_s)s), %(batch_size)s);

-- name: prune_due
-- How many of the target's rows are older than older_than_s and would go; nothing deleted.
SELECT imagejobs_prune(%(target)s, make_interval(secs => %(older_than_s)s), 1, true);
