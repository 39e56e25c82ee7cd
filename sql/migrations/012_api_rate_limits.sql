-- Per-principal request counters for the API, shared by every API instance: a fixed window
-- (`window_s` seconds aligned on the epoch) counted by one upsert per request. UNLOGGED: the
-- counters are worth nothing after a crash, so they cost no WAL. The imagejobs_ prefix puts it
-- under imagejobs_enable_rls() (sql/008), which closes it to Supabase users.

CREATE UNLOGGED TABLE imagejobs_api_rate_limits (
    subject text PRIMARY KEY,
    window_start timestamptz NOT NULL,
    hits integer NOT NULL
);

-- Counts one request of `rate_key` and says whether it is within `max_requests` per window,
-- how many remain and how many seconds until the window resets.
CREATE FUNCTION imagejobs_hit_api_rate(rate_key text, max_requests integer, window_s integer DEFAULT 60)
    RETURNS TABLE (allowed boolean, remaining integer, reset_s integer)
    LANGUAGE sql
AS $$
    WITH now_ AS (
        SELECT clock_timestamp() AS ts
    ), win AS (
        SELECT to_timestamp(floor(extract(epoch FROM ts) / window_s) * window_s) AS start, ts
          FROM now_
    ), hit AS (
        INSERT INTO imagejobs_api_rate_limits AS r (subject, window_start, hits)
        SELECT rate_key, win.start, 1 FROM win
        ON CONFLICT ON CONSTRAINT imagejobs_api_rate_limits_pkey DO UPDATE
           SET hits = CASE WHEN r.window_start >= excluded.window_start THEN r.hits + 1 ELSE 1 END,
               window_start = greatest(r.window_start, excluded.window_start)
        RETURNING r.hits, r.window_start
    )
    SELECT hit.hits <= max_requests,
           greatest(max_requests - hit.hits, 0),
           greatest(ceil(extract(epoch FROM hit.window_start + make_interval(secs => window_s) - win.ts))::integer, 1)
      FROM hit, win;
$$;
