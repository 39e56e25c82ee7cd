-- Metrics and costs (issue 8, part 4).
--
-- generation_prices: published list prices, "as of" assumptions documented in docs/metrics.md.
-- A row matches a generation when provider and model are equal and size / quality are equal or
-- the wildcard '*'; the most specific matching row wins (exact size beats '*', then exact
-- quality). unit 'image' charges usd_per_unit per image, unit 'megapixel' charges it per
-- million output pixels (size 'WxH' in prompt_spec; 1024x1024 when absent).
CREATE TABLE generation_prices (
    provider text NOT NULL CHECK (provider IN ('local', 'openai', 'google', 'fal')),
    model text NOT NULL,
    size text NOT NULL DEFAULT '*',
    quality text NOT NULL DEFAULT '*',
    unit text NOT NULL DEFAULT 'image' CHECK (unit IN ('image', 'megapixel')),
    usd_per_unit numeric(12, 6) NOT NULL CHECK (usd_per_unit >= 0),
    as_of date NOT NULL,
    source text NOT NULL,
    PRIMARY KEY (provider, model, size, quality)
);

INSERT INTO generation_prices (provider, model, size, quality, unit, usd_per_unit, as_of, source)
VALUES
    -- local: our own renderer costs nothing per image.
    ('local', '*', '*', '*', 'image', 0, '2025-12-01', 'self-hosted'),
    -- OpenAI gpt-image-1, per image by quality and size.
    ('openai', 'gpt-image-1', '1024x1024', 'low', 'image', 0.011, '2025-12-01', 'https://platform.openai.com/docs/pricing'),
    ('openai', 'gpt-image-1', '1024x1536', 'low', 'image', 0.016, '2025-12-01', 'https://platform.openai.com/docs/pricing'),
    ('openai', 'gpt-image-1', '1536x1024', 'low', 'image', 0.016, '2025-12-01', 'https://platform.openai.com/docs/pricing'),
    ('openai', 'gpt-image-1', '1024x1024', 'medium', 'image', 0.042, '2025-12-01', 'https://platform.openai.com/docs/pricing'),
    ('openai', 'gpt-image-1', '1024x1536', 'medium', 'image', 0.063, '2025-12-01', 'https://platform.openai.com/docs/pricing'),
    ('openai', 'gpt-image-1', '1536x1024', 'medium', 'image', 0.063, '2025-12-01', 'https://platform.openai.com/docs/pricing'),
    ('openai', 'gpt-image-1', '1024x1024', 'high', 'image', 0.167, '2025-12-01', 'https://platform.openai.com/docs/pricing'),
    ('openai', 'gpt-image-1', '1024x1536', 'high', 'image', 0.25, '2025-12-01', 'https://platform.openai.com/docs/pricing'),
    ('openai', 'gpt-image-1', '1536x1024', 'high', 'image', 0.25, '2025-12-01', 'https://platform.openai.com/docs/pricing'),
    ('openai', 'gpt-image-1', '*', '*', 'image', 0.042, '2025-12-01', 'assumed: medium 1024x1024 when size/quality are unset or auto'),
    -- OpenAI gpt-image-1.5, per image by quality and size.
    ('openai', 'gpt-image-1.5', '1024x1024', 'low', 'image', 0.009, '2025-12-16', 'https://platform.openai.com/docs/pricing'),
    ('openai', 'gpt-image-1.5', '1024x1536', 'low', 'image', 0.013, '2025-12-16', 'https://platform.openai.com/docs/pricing'),
    ('openai', 'gpt-image-1.5', '1536x1024', 'low', 'image', 0.013, '2025-12-16', 'https://platform.openai.com/docs/pricing'),
    ('openai', 'gpt-image-1.5', '1024x1024', 'medium', 'image', 0.034, '2025-12-16', 'https://platform.openai.com/docs/pricing'),
    ('openai', 'gpt-image-1.5', '1024x1536', 'medium', 'image', 0.05, '2025-12-16', 'https://platform.openai.com/docs/pricing'),
    ('openai', 'gpt-image-1.5', '1536x1024', 'medium', 'image', 0.05, '2025-12-16', 'https://platform.openai.com/docs/pricing'),
    ('openai', 'gpt-image-1.5', '1024x1024', 'high', 'image', 0.133, '2025-12-16', 'https://platform.openai.com/docs/pricing'),
    ('openai', 'gpt-image-1.5', '1024x1536', 'high', 'image', 0.2, '2025-12-16', 'https://platform.openai.com/docs/pricing'),
    ('openai', 'gpt-image-1.5', '1536x1024', 'high', 'image', 0.2, '2025-12-16', 'https://platform.openai.com/docs/pricing'),
    ('openai', 'gpt-image-1.5', '*', '*', 'image', 0.034, '2025-12-16', 'assumed: medium 1024x1024 when size/quality are unset or auto'),
    -- Google: Gemini image output and Imagen, flat per image.
    ('google', 'gemini-2.5-flash-image', '*', '*', 'image', 0.039, '2025-12-01', 'https://ai.google.dev/gemini-api/docs/pricing'),
    ('google', 'gemini-2.5-flash-image-preview', '*', '*', 'image', 0.039, '2025-12-01', 'https://ai.google.dev/gemini-api/docs/pricing'),
    ('google', 'imagen-4.0-generate-001', '*', '*', 'image', 0.04, '2025-12-01', 'https://ai.google.dev/gemini-api/docs/pricing'),
    ('google', 'imagen-4.0-fast-generate-001', '*', '*', 'image', 0.02, '2025-12-01', 'https://ai.google.dev/gemini-api/docs/pricing'),
    ('google', 'imagen-4.0-ultra-generate-001', '*', '*', 'image', 0.06, '2025-12-01', 'https://ai.google.dev/gemini-api/docs/pricing'),
    ('google', 'imagen-3.0-generate-002', '*', '*', 'image', 0.03, '2025-12-01', 'https://ai.google.dev/gemini-api/docs/pricing'),
    -- fal FLUX, per output megapixel.
    ('fal', 'fal-ai/flux/schnell', '*', '*', 'megapixel', 0.003, '2025-12-01', 'https://fal.ai/pricing'),
    ('fal', 'fal-ai/flux/dev', '*', '*', 'megapixel', 0.025, '2025-12-01', 'https://fal.ai/pricing'),
    ('fal', 'fal-ai/flux-pro/v1.1', '*', '*', 'megapixel', 0.04, '2025-12-01', 'https://fal.ai/pricing'),
    ('fal', 'fal-ai/flux-pro/kontext', '*', '*', 'image', 0.04, '2025-12-01', 'https://fal.ai/pricing');

-- Every generation with its matched price and estimated cost. Only completed generations are
-- charged (providers bill successful outputs); unmatched provider/model pairs cost NULL, so
-- a missing price shows up as a gap rather than as a silent zero.
-- security_invoker: a view runs as its owner by default, which would bypass the RLS policies of
-- sql/008 for Supabase users reading it through PostgREST; as invoker they see their own rows.
CREATE VIEW generation_cost_lines WITH (security_invoker = true) AS
SELECT
    g.id AS generation_id,
    g.workspace_id,
    g.provider,
    g.model,
    g.status,
    g.created_at,
    coalesce(g.prompt_spec ->> 'size', '1024x1024') AS size,
    coalesce(g.prompt_spec ->> 'quality', '*') AS quality,
    p.unit,
    p.usd_per_unit,
    CASE
        WHEN g.status <> 'completed' THEN 0
        WHEN p.unit = 'megapixel' THEN round(
            p.usd_per_unit
            * split_part(coalesce(g.prompt_spec ->> 'size', '1024x1024'), 'x', 1)::numeric
            * split_part(coalesce(g.prompt_spec ->> 'size', '1024x1024'), 'x', 2)::numeric
            / 1000000, 6)
        ELSE p.usd_per_unit
    END AS estimated_cost_usd
FROM image_generations g
LEFT JOIN LATERAL (
    SELECT gp.unit, gp.usd_per_unit
    FROM generation_prices gp
    WHERE gp.provider = g.provider
      AND gp.model IN (g.model, '*')
      AND gp.size IN (coalesce(g.prompt_spec ->> 'size', '1024x1024'), '*')
      AND gp.quality IN (coalesce(g.prompt_spec ->> 'quality', '*'), '*')
    ORDER BY (gp.model = g.model) DESC, (gp.size <> '*') DESC, (gp.quality <> '*') DESC
    LIMIT 1
) p ON true;

-- Daily totals per workspace, provider and model (UTC days of created_at).
CREATE VIEW generation_costs WITH (security_invoker = true) AS
SELECT
    (date_trunc('day', created_at AT TIME ZONE 'UTC'))::date AS day,
    workspace_id,
    provider,
    model,
    count(*) AS generations,
    count(*) FILTER (WHERE status = 'completed') AS completed,
    count(*) FILTER (WHERE status = 'failed') AS failed,
    sum(estimated_cost_usd) AS estimated_cost_usd,
    count(*) FILTER (WHERE status = 'completed' AND usd_per_unit IS NULL) AS unpriced
FROM generation_cost_lines
GROUP BY 1, 2, 3, 4;

-- /metrics reads the newest events / webhook attempts inside a bounded window; these keep
-- those range scans cheap.
CREATE INDEX image_generations_finished_at_idx ON image_generations (finished_at)
    WHERE finished_at IS NOT NULL;
CREATE INDEX outgoing_webhook_attempts_sent_at_idx ON outgoing_webhook_attempts (sent_at);
CREATE INDEX image_events_ts_idx ON image_events (ts);

-- List prices are public knowledge: readable by everyone, RLS on so Supabase's roles can read
-- but not change them (imagejobs_enable_rls() covers tables it knows by name).
ALTER TABLE generation_prices ENABLE ROW LEVEL SECURITY;
CREATE POLICY "prices are readable by everyone" ON generation_prices FOR SELECT USING (true);
