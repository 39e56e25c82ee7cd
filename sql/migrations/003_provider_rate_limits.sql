-- Per-provider request rate shared by every worker process: a sliding-window log, so no window
-- of `window_s` seconds ever holds more than `max_requests` grants, whatever the number of
-- workers. Callers that are refused get the seconds to wait and re-schedule their job.

CREATE TABLE provider_requests (
    provider text NOT NULL,
    granted_at timestamptz NOT NULL
);
CREATE INDEX provider_requests_provider_idx ON provider_requests (provider, granted_at);

CREATE FUNCTION imagejobs_acquire_rate(provider text, max_requests integer, window_s double precision DEFAULT 60)
    RETURNS TABLE (granted boolean, wait_s double precision, granted_at timestamptz)
    LANGUAGE plpgsql
AS $$
DECLARE
    _now timestamptz;
    _window interval := make_interval(secs => window_s);
    _count integer;
    _oldest timestamptz;
BEGIN
    -- One grant decision at a time per provider, across every connection.
    PERFORM pg_advisory_xact_lock(hashtextextended('imagejobs_rate:' || provider, 0));
    _now := clock_timestamp();
    DELETE FROM provider_requests r
     WHERE r.provider = imagejobs_acquire_rate.provider AND r.granted_at <= _now - _window;
    SELECT count(*), min(r.granted_at) INTO _count, _oldest
      FROM provider_requests r WHERE r.provider = imagejobs_acquire_rate.provider;
    IF _count < max_requests THEN
        INSERT INTO provider_requests VALUES (imagejobs_acquire_rate.provider, _now);
        RETURN QUERY SELECT true, 0::double precision, _now;
    ELSE
        RETURN QUERY SELECT false,
            greatest(extract(epoch FROM _oldest + _window - _now)::double precision, 0.001), NULL::timestamptz;
    END IF;
END;
$$;
