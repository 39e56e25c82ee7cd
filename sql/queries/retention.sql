-- Named queries of the pruner (worker/queue/retention.py): imagejobs_prune (sql/migrations/024)
-- over each table it keeps in check. Each starts with "-- name: <name>", unique across
-- sql/queries/; parameters are psycopg named placeholders. Nothing here is a migration.

-- name: prune_batch
-- At most batch_size of the target's rows older than older_than_s deleted; how many.
SELECT imagejobs_prune(%(target)s, make_interval(secs => %(older_than_s)s), %(batch_size)s);

-- name: prune_due
-- How many of the target's rows are older than older_than_s and would go; nothing deleted.
SELECT imagejobs_prune(%(target)s, make_interval(secs => %(older_than_s)s), 1, true);

-- name: expiring_results
-- Finished generations that still have files, finished before older_than_s, oldest first,
-- locked for the caller's transaction (the files go from storage, then forget_results clears
-- the row; a generation someone is touching is left for the next run).
SELECT id, result_key, thumbnail_key, mask_key
FROM image_generations
WHERE finished_at IS NOT NULL
  AND (result_key IS NOT NULL OR thumbnail_key IS NOT NULL OR mask_key IS NOT NULL)
  AND finished_at < now() - make_interval(secs => %(older_than_s)s)
  AND status IN ('completed', 'failed', 'cancelled')
ORDER BY finished_at
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: forget_results
-- After their files were deleted: no key and no URL is left pointing at them (the node trigger
-- clears a canvas node that shows one of them).
UPDATE image_generations
SET result_key = NULL, thumbnail_key = NULL, mask_key = NULL,
    result_image_url = NULL, thumbnail_url = NULL, mask_url = NULL
WHERE id = ANY (%(ids)s::uuid[]);

-- name: expiring_results_due
SELECT count(*)
FROM image_generations
WHERE finished_at IS NOT NULL
  AND (result_key IS NOT NULL OR thumbnail_key IS NOT NULL OR mask_key IS NOT NULL)
  AND finished_at < now() - make_interval(secs => %(older_than_s)s)
  AND status IN ('completed', 'failed', 'cancelled');
