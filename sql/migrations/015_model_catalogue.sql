-- Issue 13: providers and their models are data. `providers` names every provider a generation
-- may use; `models` is the catalogue of what each serves, with its lifecycle (active,
-- deprecated, shutdown), replacement, capabilities and the one default per provider. A model id,
-- a shutdown date or a default changes with an UPDATE (or `imagejobs models default`), not a
-- deploy. Facts below were read from the providers' own pages on 2026-12-02 (docs/providers.md).

CREATE TABLE providers (
    name text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_-]{0,49}$'),
    label text NOT NULL
);

INSERT INTO providers (name, label) VALUES
    ('local', 'Local renderer (Pillow, offline)'),
    ('openai', 'OpenAI'),
    ('google', 'Google Gemini'),
    ('fal', 'fal'),
    ('stability', 'Stability AI');

CREATE TABLE models (
    provider text NOT NULL REFERENCES providers (name),
    model text NOT NULL CHECK (length(model) BETWEEN 1 AND 200),
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'deprecated', 'shutdown')),
    deprecated_on date NULL,
    shutdown_date date NULL,
    -- What to use instead (a model of the same provider), for deprecated and shut-down models.
    replacement text NULL,
    capabilities text[] NOT NULL DEFAULT '{generate}'
        CHECK (capabilities <@ ARRAY['generate', 'image_to_image', 'inpaint']),
    is_default boolean NOT NULL DEFAULT false,
    -- Where the facts came from, and when they were read.
    source text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, model),
    CONSTRAINT models_default_is_served CHECK (NOT is_default OR status <> 'shutdown'),
    CONSTRAINT models_replacement_is_another CHECK (replacement IS DISTINCT FROM model)
);
-- One default per provider.
CREATE UNIQUE INDEX models_one_default_idx ON models (provider) WHERE is_default;

INSERT INTO models (provider, model, status, deprecated_on, shutdown_date, replacement, capabilities, is_default, source) VALUES
    ('local', 'pillow-v1', 'active', NULL, NULL, NULL, '{generate,image_to_image,inpaint}', true,
     'imagejobs'),
    -- OpenAI: https://developers.openai.com/api/docs/deprecations and the models pages, read 2026-12-02.
    ('openai', 'gpt-image-2.6-sunburst', 'active', NULL, NULL, NULL, '{generate,image_to_image,inpaint}', true,
     'https://developers.openai.com/api/docs/models/gpt-image-2.6-sunburst (read 2026-12-02)'),
    ('openai', 'gpt-image-2.6-flare', 'active', NULL, NULL, NULL, '{generate,image_to_image,inpaint}', false,
     'https://developers.openai.com/api/docs/deprecations (recommended replacement, read 2026-12-02)'),
    ('openai', 'gpt-image-2.5-sunburst', 'active', NULL, NULL, NULL, '{generate,image_to_image,inpaint}', false,
     'OpenAI API reference, images.generate model values (read 2026-12-02)'),
    ('openai', 'gpt-image-2.5-flare', 'active', NULL, NULL, NULL, '{generate,image_to_image,inpaint}', false,
     'OpenAI API reference, images.generate model values (read 2026-12-02)'),
    ('openai', 'gpt-image-2', 'active', NULL, NULL, NULL, '{generate,image_to_image,inpaint}', false,
     'OpenAI API reference, images.generate model values (read 2026-12-02)'),
    ('openai', 'gpt-image-1.5', 'shutdown', '2026-06-02', '2026-12-01', 'gpt-image-2.6-sunburst', '{generate,image_to_image,inpaint}', false,
     'https://developers.openai.com/api/docs/deprecations (read 2026-12-02)'),
    ('openai', 'gpt-image-1.5-2025-12-16', 'shutdown', '2026-06-02', '2026-12-01', 'gpt-image-2.6-sunburst', '{generate,image_to_image,inpaint}', false,
     'https://developers.openai.com/api/docs/deprecations (read 2026-12-02)'),
    ('openai', 'gpt-image-1-mini', 'shutdown', '2026-06-02', '2026-12-01', 'gpt-image-2.6-flare', '{generate,image_to_image,inpaint}', false,
     'https://developers.openai.com/api/docs/deprecations (read 2026-12-02)'),
    ('openai', 'chatgpt-image-latest', 'shutdown', '2026-06-02', '2026-12-01', 'gpt-image-2.6-sunburst', '{generate,image_to_image,inpaint}', false,
     'https://developers.openai.com/api/docs/deprecations (read 2026-12-02)'),
    ('openai', 'gpt-image-1', 'shutdown', '2026-04-22', '2026-10-23', 'gpt-image-2.6-sunburst', '{generate,image_to_image,inpaint}', false,
     'https://developers.openai.com/api/docs/models/gpt-image-1 (read 2026-12-02)'),
    ('openai', 'dall-e-3', 'shutdown', '2025-11-14', '2026-05-12', 'gpt-image-2.6-sunburst', '{generate}', false,
     'OpenAI deprecations page as quoted by archive.li/3RThE (read 2026-12-02)'),
    ('openai', 'dall-e-2', 'shutdown', '2025-11-14', '2026-05-12', 'gpt-image-2.6-sunburst', '{generate,image_to_image,inpaint}', false,
     'OpenAI deprecations page as quoted by archive.li/3RThE (read 2026-12-02)'),
    -- Google: https://ai.google.dev/gemini-api/docs/deprecations and .../changelog, read 2026-12-02.
    ('google', 'gemini-nano-banana-2.1', 'active', NULL, NULL, NULL, '{generate,image_to_image,inpaint}', true,
     'https://ai.google.dev/gemini-api/docs/changelog (GA 2026-10-06, read 2026-12-02)'),
    ('google', 'gemini-3-pro-image', 'active', NULL, NULL, NULL, '{generate,image_to_image,inpaint}', false,
     'https://ai.google.dev/gemini-api/docs/changelog (GA 2026-05-28, read 2026-12-02)'),
    ('google', 'gemini-3.1-flash-lite-image', 'active', NULL, NULL, NULL, '{generate,image_to_image}', false,
     'https://ai.google.dev/gemini-api/docs/changelog (GA 2026-06-30, read 2026-12-02)'),
    ('google', 'gemini-3.1-flash-image', 'deprecated', '2026-10-06', NULL, 'gemini-nano-banana-2.1', '{generate,image_to_image,inpaint}', false,
     'https://ai.google.dev/gemini-api/docs/changelog (deprecated 2026-10-06, no shutdown date announced; read 2026-12-02)'),
    ('google', 'gemini-3.1-flash-image-preview', 'shutdown', '2026-05-28', '2026-06-25', 'gemini-nano-banana-2.1', '{generate,image_to_image,inpaint}', false,
     'https://ai.google.dev/gemini-api/docs/deprecations (read 2026-12-02)'),
    ('google', 'gemini-3-pro-image-preview', 'shutdown', '2026-05-28', '2026-06-25', 'gemini-3-pro-image', '{generate,image_to_image,inpaint}', false,
     'https://ai.google.dev/gemini-api/docs/deprecations (read 2026-12-02)'),
    ('google', 'gemini-2.5-flash-image', 'shutdown', NULL, '2026-10-02', 'gemini-nano-banana-2.1', '{generate,image_to_image,inpaint}', false,
     'https://ai.google.dev/gemini-api/docs/deprecations (read 2026-12-02)'),
    ('google', 'imagen-4.0-generate-001', 'shutdown', '2026-06-15', '2026-08-17', 'gemini-nano-banana-2.1', '{generate}', false,
     'https://ai.google.dev/gemini-api/docs/changelog (2026-06-15 entry, read 2026-12-02)'),
    ('google', 'imagen-4.0-fast-generate-001', 'shutdown', '2026-06-15', '2026-08-17', 'gemini-nano-banana-2.1', '{generate}', false,
     'https://ai.google.dev/gemini-api/docs/changelog (2026-06-15 entry, read 2026-12-02)'),
    ('google', 'imagen-4.0-ultra-generate-001', 'shutdown', '2026-06-15', '2026-08-17', 'gemini-3-pro-image', '{generate}', false,
     'https://ai.google.dev/gemini-api/docs/changelog (2026-06-15 entry, read 2026-12-02)'),
    -- fal: no deprecation notice found for these (read 2026-12-02).
    ('fal', 'fal-ai/flux/dev', 'active', NULL, NULL, NULL, '{generate,image_to_image}', true,
     'https://fal.ai/models (no deprecation notice found, read 2026-12-02)'),
    ('fal', 'fal-ai/flux/schnell', 'active', NULL, NULL, NULL, '{generate,image_to_image}', false,
     'https://fal.ai/models (no deprecation notice found, read 2026-12-02)'),
    -- Stability AI v2beta stable-image: `ultra` and `core` name their endpoints; the SD 3.5 family
    -- goes through /sd3 with `model`. Stability's API client code and docs mirrors, read 2026-12-02.
    ('stability', 'ultra', 'active', NULL, NULL, NULL, '{generate,image_to_image,inpaint}', true,
     'https://platform.stability.ai/docs/api-reference (read 2026-12-02)'),
    ('stability', 'core', 'active', NULL, NULL, NULL, '{generate,inpaint}', false,
     'https://platform.stability.ai/docs/api-reference (read 2026-12-02)'),
    ('stability', 'sd3.5-large', 'active', NULL, NULL, NULL, '{generate,image_to_image,inpaint}', false,
     'https://platform.stability.ai/docs/api-reference (read 2026-12-02)'),
    ('stability', 'sd3.5-large-turbo', 'active', NULL, NULL, NULL, '{generate,image_to_image,inpaint}', false,
     'https://platform.stability.ai/docs/api-reference (read 2026-12-02)'),
    ('stability', 'sd3.5-medium', 'active', NULL, NULL, NULL, '{generate,image_to_image,inpaint}', false,
     'https://platform.stability.ai/docs/api-reference (read 2026-12-02)');

-- The providers' lists are the table, not CHECKs: adding a provider is one INSERT.
ALTER TABLE image_generations DROP CONSTRAINT image_generations_provider_check;
ALTER TABLE image_generations
    ADD CONSTRAINT image_generations_provider_fkey FOREIGN KEY (provider) REFERENCES providers (name);
ALTER TABLE generation_prices DROP CONSTRAINT generation_prices_provider_check;
ALTER TABLE generation_prices
    ADD CONSTRAINT generation_prices_provider_fkey FOREIGN KEY (provider) REFERENCES providers (name);

-- New catalogue code: the provider does not serve the model (permanent).
ALTER TABLE image_generations DROP CONSTRAINT image_generations_error_code_check;
ALTER TABLE image_generations ADD CONSTRAINT image_generations_error_code_check CHECK (error_code IN (
    'not_found', 'source_unreachable', 'no_result', 'content_policy', 'result_unreachable',
    'provider_error', 'timeout', 'mask_missing', 'mask_invalid', 'source_unreadable',
    'storage_error', 'cancelled', 'model_unavailable'));

-- One source of defaults for the API and for plain SQL: the catalogue.
CREATE OR REPLACE FUNCTION imagejobs_default_model(provider text) RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT m.model FROM models m WHERE m.provider = imagejobs_default_model.provider AND m.is_default
$$;

-- A model the catalogue marks shut down is refused at insert, naming what to use instead; a
-- model it does not know is tried (providers publish models faster than migrations).
CREATE FUNCTION imagejobs_generations_check_model() RETURNS trigger
    LANGUAGE plpgsql
AS $$
DECLARE
    _entry models;
BEGIN
    IF NEW.status <> 'pending' THEN
        RETURN NEW;  -- a record of past work (an import) is not a request to run
    END IF;
    SELECT * INTO _entry FROM models WHERE provider = NEW.provider AND model = NEW.model;
    IF FOUND AND _entry.status = 'shutdown' THEN
        RAISE check_violation USING
            MESSAGE = format('model %s of %s was shut down%s; use %s instead',
                             NEW.model, NEW.provider,
                             coalesce(' on ' || _entry.shutdown_date, ''),
                             coalesce(_entry.replacement, imagejobs_default_model(NEW.provider), 'another model')),
            COLUMN = 'model',
            CONSTRAINT = 'models_shutdown';
    END IF;
    RETURN NEW;
END;
$$;

-- Named to run after image_generations_before_insert (which fills in the default model).
CREATE TRIGGER image_generations_check_model
    BEFORE INSERT ON image_generations
    FOR EACH ROW EXECUTE FUNCTION imagejobs_generations_check_model();

-- A deprecated model is accepted with a warning in the generation's own trail.
CREATE FUNCTION imagejobs_generations_warn_deprecated_model() RETURNS trigger
    LANGUAGE plpgsql
AS $$
DECLARE
    _entry models;
BEGIN
    SELECT * INTO _entry FROM models
     WHERE provider = NEW.provider AND model = NEW.model AND status = 'deprecated';
    IF FOUND AND NEW.status = 'pending' THEN
        INSERT INTO image_events (generation_id, project_id, workspace_id, kind, status, step, progress, message, data)
        VALUES (NEW.id, NEW.project_id, NEW.workspace_id, 'log', NEW.status, NEW.step, NEW.progress,
                format('Model %s is deprecated%s%s', NEW.model,
                       coalesce('; it shuts down on ' || _entry.shutdown_date, ''),
                       coalesce('; use ' || _entry.replacement || ' instead', '')),
                jsonb_strip_nulls(jsonb_build_object(
                    'deprecated_model', NEW.model,
                    'shutdown_date', _entry.shutdown_date,
                    'replacement', _entry.replacement)));
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER image_generations_warn_deprecated_model
    AFTER INSERT ON image_generations
    FOR EACH ROW EXECUTE FUNCTION imagejobs_generations_warn_deprecated_model();

-- List prices for today's models (docs/metrics.md). OpenAI and Google bill image output by the
-- token ($30 per 1M image-output tokens for both, read 2026-12-02); the per-image figures are
-- the common 1K estimates and say so in their source.
INSERT INTO generation_prices (provider, model, size, quality, unit, usd_per_unit, as_of, source) VALUES
    ('openai', 'gpt-image-2.6-sunburst', '*', '*', 'image', 0.06, '2026-12-02', 'estimate: 1K image at $30/1M output tokens (third-party per-image figures)'),
    ('openai', 'gpt-image-2.6-flare', '*', '*', 'image', 0.06, '2026-12-02', 'estimate: 1K image at $30/1M output tokens (third-party per-image figures)'),
    ('openai', 'gpt-image-2.5-sunburst', '*', '*', 'image', 0.06, '2026-12-02', 'estimate: 1K image at $30/1M output tokens (third-party per-image figures)'),
    ('openai', 'gpt-image-2.5-flare', '*', '*', 'image', 0.06, '2026-12-02', 'estimate: 1K image at $30/1M output tokens (third-party per-image figures)'),
    ('openai', 'gpt-image-2', '*', '*', 'image', 0.06, '2026-12-02', 'estimate: 1K image at $30/1M output tokens (third-party per-image figures)'),
    ('google', 'gemini-nano-banana-2.1', '*', '*', 'image', 0.0336, '2026-12-02', 'estimate: 1K image at $30/1M output tokens'),
    ('google', 'gemini-3-pro-image', '*', '*', 'image', 0.134, '2026-12-02', 'estimate: 1K image (third-party)'),
    ('stability', 'ultra', '*', '*', 'image', 0.08, '2026-12-02', '8 credits at $0.01 (third-party copy of platform.stability.ai/pricing)'),
    ('stability', 'core', '*', '*', 'image', 0.03, '2026-12-02', '3 credits at $0.01 (third-party copy of platform.stability.ai/pricing)'),
    ('stability', 'sd3.5-large', '*', '*', 'image', 0.065, '2026-12-02', '6.5 credits at $0.01 (third-party copy of platform.stability.ai/pricing)'),
    ('stability', 'sd3.5-large-turbo', '*', '*', 'image', 0.04, '2026-12-02', '4 credits at $0.01 (third-party copy of platform.stability.ai/pricing)'),
    ('stability', 'sd3.5-medium', '*', '*', 'image', 0.035, '2026-12-02', '3.5 credits at $0.01 (third-party copy of platform.stability.ai/pricing)');

-- The catalogue is public knowledge: readable by everyone, changed only by its owner (the
-- migrator, `imagejobs models default`); RLS on so Supabase's roles can read but not write.
ALTER TABLE providers ENABLE ROW LEVEL SECURITY;
CREATE POLICY "providers are readable by everyone" ON providers FOR SELECT USING (true);
ALTER TABLE models ENABLE ROW LEVEL SECURITY;
CREATE POLICY "models are readable by everyone" ON models FOR SELECT USING (true);

SELECT imagejobs_secure_trigger_functions();
