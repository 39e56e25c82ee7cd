"""Provider request rates enforced across every worker through Postgres (sql/003)."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

from worker.core.sqlfiles import query


class RateLimiter:
    def __init__(
        self, pool: AsyncConnectionPool, per_minute: dict[str, int], window_s: float = 60.0
    ) -> None:
        self.pool = pool
        self.per_minute = per_minute
        self.window_s = window_s

    async def acquire(self, provider: str) -> float:
        """0 when a request may be sent now; otherwise the seconds until one may."""
        limit = self.per_minute.get(provider)
        if limit is None:
            return 0.0
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                query("acquire_rate"),
                {"provider": provider, "max_requests": limit, "window_s": self.window_s},
            )
            row = await cur.fetchone()
        assert row is not None
        granted, wait_s = bool(row[0]), float(row[1])
        return 0.0 if granted else wait_s
