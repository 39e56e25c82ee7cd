"""A cache of a JWKS document's public keys, shared by Supabase user tokens (api/auth/jwt.py) and
fal's webhook signatures (api/auth/webhooks.py).

- A signature made with a cached key never waits on a fetch: once keys are cached, a refresh
  after the TTL runs in the background and the old keys stay in use meanwhile.
- A signature no cached key accounts for (a rotated-in key, or a forgery) refreshes the document
  at most once per cooldown, however many arrive; those arriving while that one fetch runs wait
  for it, the rest are refused at once.
- One fetch at a time (callers join the fetch in flight); after a failed fetch the next waits
  `retry_s`, and the keys fetched before stay in use.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import httpx

K = TypeVar("K")
T = TypeVar("T")

RETRY_S = 5.0


class JwksCache(Generic[K]):
    def __init__(
        self,
        url: str,
        parse: Callable[[Any], tuple[str, K] | None],
        *,
        ttl_s: float,
        cooldown_s: float,
        retry_s: float = RETRY_S,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        """`parse` turns one entry of the document's `keys` into (an id, the key), or None for
        an entry not to be used."""
        self.url = url
        self.parse = parse
        self.ttl_s = ttl_s
        self.cooldown_s = cooldown_s
        self.retry_s = retry_s
        self.timeout_s = timeout_s
        self.clock = clock
        self.client = client
        self.fetches = 0
        self._keys: dict[str, K] = {}
        self._fetched_at: float | None = None
        self._failed_at: float | None = None
        self._refreshed_on_miss_at: float | None = None
        self._inflight: asyncio.Task[None] | None = None

    @property
    def available(self) -> bool:
        """Whether a fetch has ever succeeded (else a miss means the keys are unavailable)."""
        return self._fetched_at is not None

    def _may_retry(self, now: float) -> bool:
        return self._failed_at is None or now - self._failed_at >= self.retry_s

    async def find(self, match: Callable[[dict[str, K]], T | None]) -> T | None:
        """`match` applied to the cached keys; when it finds nothing, once more after a refresh,
        if the cooldown allows one."""
        found = match(await self._current())
        if found is not None or not await self._refresh_on_miss():
            return found
        return match(self._keys)

    async def idle(self) -> None:
        """Waits for a fetch in flight, if any (tests; a background refresh)."""
        if self._inflight is not None:
            await asyncio.shield(self._inflight)

    async def _current(self) -> dict[str, K]:
        now = self.clock()
        if self._fetched_at is None:
            if self._may_retry(now):
                await self._refresh()
        elif now - self._fetched_at >= self.ttl_s and self._may_retry(now):
            self._start_refresh()  # in the background: the keys in hand serve meanwhile
        return self._keys

    async def _refresh_on_miss(self) -> bool:
        if self._inflight is not None:
            await asyncio.shield(self._inflight)
            return True
        now = self.clock()
        last = self._refreshed_on_miss_at
        if (last is not None and now - last < self.cooldown_s) or not self._may_retry(now):
            return False
        self._refreshed_on_miss_at = now
        await self._refresh()
        return True

    def _start_refresh(self) -> asyncio.Task[None]:
        if self._inflight is None:
            self._inflight = asyncio.create_task(self._run_fetch())
        return self._inflight

    async def _refresh(self) -> None:
        # Shielded: a caller that goes away (a client disconnecting) does not cancel the fetch
        # the others wait on.
        await asyncio.shield(self._start_refresh())

    async def _run_fetch(self) -> None:
        try:
            await self._fetch()
        finally:
            self._inflight = None

    async def _fetch(self) -> None:
        self.fetches += 1
        try:
            if self.client is not None:
                response = await self.client.get(self.url, timeout=self.timeout_s)
            else:
                async with httpx.AsyncClient(timeout=self.timeout_s) as client:
                    response = await client.get(self.url)
            response.raise_for_status()
            entries = response.json()["keys"]
            if not isinstance(entries, list):
                raise TypeError("keys is not a list")
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            self._failed_at = self.clock()
            return
        self._keys = dict(parsed for entry in entries if (parsed := self.parse(entry)))
        self._fetched_at, self._failed_at = self.clock(), None
