-- Quotas (issue 16, part 3): per-workspace limits on generations and estimated spend per day,
-- enforced by the database, so the API and a plain-SQL INSERT are held to the same numbers.
--
-- The window is the UTC day of now() (the inserting transaction's start, the same clock that
-- fills created_at): [today 00:00 UTC, tomorrow 00:00 UTC). It resets at the next UTC midnight.
--
-- NULL means unlimited. A limit of 0 is a limit: the workspace may create nothing today (a
-- freeze); `imagejobs quota set ... none` clears one. A workspace with no row has no limits.

CREATE TABLE workspace_limits (
    workspace_id uuid PRIMARY KEY,
    generations_per_day integer NULL CHECK (generations_per_day >= 0),
    usd_per_day numeric(12, 6) NULL CHECK (usd_per_day >= 0),
    -- Stored here; the worker's concurrency cap enforces it (issue 16, another part).
    max_concurrency integer NULL CHECK (max_concurrency > 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Limits are the operator's (`imagejobs quota set`): closed to Supabase's roles, like the
-- imagejobs_ tables imagejobs_enable_rls() closes; the API and the trigger read it as owner.
ALTER TABLE workspace_limits ENABLE ROW LEVEL SECURITY;

-- The estimated list price of one generation of `provider`/`model` with this prompt_spec: the
-- price lookup of the generation_cost_lines view (sql/013) for one row, whatever its status.
-- NULL when no price matches (an unpriced model). A size that is not WxH counts as 1024x1024
-- for per-megapixel prices (the view would fail to cast it; an insert must not).
CREATE FUNCTION imagejobs_estimated_cost(provider text, model text, prompt_spec jsonb)
    RETURNS numeric
    LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT CASE
               WHEN p.unit = 'megapixel' THEN round(
                   p.usd_per_unit
                   * split_part(s.pixels, 'x', 1)::numeric
                   * split_part(s.pixels, 'x', 2)::numeric
                   / 1000000, 6)
               ELSE p.usd_per_unit
           END
      FROM (SELECT coalesce(prompt_spec ->> 'size', '1024x1024') AS size,
                   coalesce(prompt_spec ->> 'quality', '*') AS quality,
                   CASE WHEN coalesce(prompt_spec ->> 'size', '1024x1024') ~ '^[0-9]{1,5}x[0-9]{1,5}$'
                        THEN coalesce(prompt_spec ->> 'size', '1024x1024')
                        ELSE '1024x1024' END AS pixels) s
      JOIN LATERAL (
          SELECT gp.unit, gp.usd_per_unit
            FROM generation_prices gp
           WHERE gp.provider = imagejobs_estimated_cost.provider
             AND gp.model IN (imagejobs_estimated_cost.model, '*')
             AND gp.size IN (s.size, '*')
             AND gp.quality IN (s.quality, '*')
           ORDER BY (gp.model = imagejobs_estimated_cost.model) DESC, (gp.size <> '*') DESC,
                    (gp.quality <> '*') DESC
           LIMIT 1
      ) p ON true
$$;

-- The window a quota counts in at `at`: the UTC day.
CREATE FUNCTION imagejobs_quota_window(at timestamptz DEFAULT now())
    RETURNS TABLE (window_start timestamptz, window_end timestamptz)
    LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT date_trunc('day', at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
           (date_trunc('day', at AT TIME ZONE 'UTC') + interval '1 day') AT TIME ZONE 'UTC'
$$;

-- A workspace's use of the current window: every generation created in it (any status: each
-- was asked for), and the estimated spend of those that cost or will cost money (pending,
-- processing, completed; failed and cancelled ones are not billed). Unpriced models add 0.
-- Grouped by what sets the price, so a busy day costs a handful of price lookups.
-- VOLATILE (the default) on purpose: called from the insert trigger it must see the rows the
-- same statement inserted before, and those other transactions committed while it waited.
CREATE FUNCTION imagejobs_workspace_usage(workspace uuid)
    RETURNS TABLE (window_start timestamptz, window_end timestamptz, generations bigint,
                   estimated_usd numeric)
    LANGUAGE sql
AS $$
    WITH w AS (SELECT * FROM imagejobs_quota_window()),
    groups AS (
        SELECT g.provider, g.model, g.prompt_spec ->> 'size' AS size,
               g.prompt_spec ->> 'quality' AS quality,
               count(*) AS n,
               count(*) FILTER (WHERE g.status IN ('pending', 'processing', 'completed')) AS billed
          FROM image_generations g, w
         WHERE g.workspace_id = workspace
           AND g.created_at >= w.window_start AND g.created_at < w.window_end
         GROUP BY 1, 2, 3, 4
    )
    SELECT w.window_start, w.window_end,
           coalesce((SELECT sum(n) FROM groups), 0)::bigint,
           coalesce((SELECT sum(billed * coalesce(imagejobs_estimated_cost(
                                 provider, model,
                                 jsonb_strip_nulls(jsonb_build_object('size', size, 'quality', quality))), 0))
                       FROM groups WHERE billed > 0), 0)
      FROM w
$$;

-- The quota check, before a new generation is stored. A workspace without limits costs one
-- primary-key lookup. One with limits is serialized per workspace for the rest of the
-- transaction (advisory lock on its id's hash), so two inserts racing for the last slot see
-- each other: the second counts after the first commits (READ COMMITTED, the default; under
-- SERIALIZABLE the same race ends in a serialization failure instead; REPEATABLE READ
-- transactions can see neither and are not protected). Only requests to run are counted: a
-- row inserted as completed / failed / cancelled records past work (an import), as in
-- imagejobs_generations_check_model().
--
-- Refused with SQLSTATE IJ429 (ours: class IJ is not PostgreSQL's) and CONSTRAINT
-- workspace_limits_generations_per_day or workspace_limits_usd_per_day; the API answers 429.
CREATE FUNCTION imagejobs_generations_check_quota() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = public, pg_temp
AS $$
DECLARE
    _limits workspace_limits;
    _usage record;
    _cost numeric;
    _resets text;
    _window text;
BEGIN
    IF NEW.status <> 'pending' THEN
        RETURN NEW;
    END IF;
    SELECT * INTO _limits FROM workspace_limits WHERE workspace_id = NEW.workspace_id;
    IF NOT FOUND OR (_limits.generations_per_day IS NULL AND _limits.usd_per_day IS NULL) THEN
        RETURN NEW;
    END IF;
    -- 18: this migration's class of advisory locks (the two-key form; the migrator's one-key
    -- lock lives in another space).
    PERFORM pg_advisory_xact_lock(18, hashtext(NEW.workspace_id::text));
    SELECT * INTO _usage FROM imagejobs_workspace_usage(NEW.workspace_id);
    _resets := to_char(_usage.window_end AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"');
    _window := format('the UTC day %s to %s',
                      to_char(_usage.window_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                      _resets);

    IF _limits.generations_per_day IS NOT NULL
       AND _usage.generations + 1 > _limits.generations_per_day THEN
        RAISE SQLSTATE 'IJ429' USING
            MESSAGE = format('workspace %s is over its generations_per_day quota: %s generations per UTC day',
                             NEW.workspace_id, _limits.generations_per_day),
            DETAIL = format('%s generations created in %s; this one would exceed the limit',
                            _usage.generations, _window),
            HINT = format('the window resets at %s (the next UTC midnight)', _resets),
            TABLE = 'workspace_limits',
            COLUMN = 'generations_per_day',
            CONSTRAINT = 'workspace_limits_generations_per_day';
    END IF;

    IF _limits.usd_per_day IS NOT NULL THEN
        _cost := coalesce(imagejobs_estimated_cost(NEW.provider, NEW.model, NEW.prompt_spec), 0);
        IF _usage.estimated_usd + _cost > _limits.usd_per_day THEN
            RAISE SQLSTATE 'IJ429' USING
                MESSAGE = format('workspace %s is over its usd_per_day quota: $%s estimated spend per UTC day',
                                 NEW.workspace_id, _limits.usd_per_day::float8),
                DETAIL = format('$%s estimated for generations created in %s; this one ($%s, %s %s) would exceed the limit',
                                _usage.estimated_usd::float8, _window, _cost::float8,
                                NEW.provider, NEW.model),
                HINT = format('the window resets at %s (the next UTC midnight)', _resets),
                TABLE = 'workspace_limits',
                COLUMN = 'usd_per_day',
                CONSTRAINT = 'workspace_limits_usd_per_day';
        END IF;
    END IF;
    RETURN NEW;
END;
$$;

-- BEFORE INSERT triggers fire in name order: this one after image_generations_before_insert
-- (which fills in workspace_id and the default model) and image_generations_check_model.
CREATE TRIGGER image_generations_check_quota
    BEFORE INSERT ON image_generations
    FOR EACH ROW EXECUTE FUNCTION imagejobs_generations_check_quota();

-- The daily count reads (workspace_id, created_at) ranges: image_generations_workspace_created_idx
-- (workspace_id, created_at DESC, id DESC, sql/001) already serves them; no new index.
