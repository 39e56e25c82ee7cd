"""Provider request rates enforced across every worker through Postgres (sql/003)."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

from worker.core import store


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
        return await store.acquire_rate(self.pool, provider, limit, self.window_s)
