-- Named queries on the model catalogue: models and providers.
-- Each starts with "-- name: <name>", unique across sql/queries/; parameters are psycopg
-- named placeholders. Nothing here is a migration.

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
