"""Per-principal limits: creation requests per minute (shared by every API instance through
Postgres) and concurrent SSE streams (counted in this process); and the per-workspace daily
quotas the database enforces (sql/018), answered as a 429 `quota_exceeded`.

Rate headers follow draft-ietf-httpapi-ratelimit-headers-07: `RateLimit-Limit`,
`RateLimit-Remaining`, `RateLimit-Reset` (seconds) and `RateLimit-Policy: <limit>;w=<window>`,
on every creation response; a refusal adds `Retry-After`.
"""

from __future__ import annotations

import math
import weakref
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TypeVar

import msgspec
from litestar.exceptions import HTTPException
from litestar.status_codes import HTTP_429_TOO_MANY_REQUESTS
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from psycopg_pool import AsyncConnectionPool

from api.auth.keys import Principal
from api.problems import QuotaWindow
from worker.core import store
from worker.core.quotas import LimitName, Usage

WINDOW_S = 60
STREAM_RETRY_AFTER_S = 5
T = TypeVar("T")


def limit_subject(principal: Principal) -> str:
    """Whom a limit counts: the API key, else the user (JWT), else the workspace."""
    if principal.key_id is not None:
        return f"key:{principal.key_id}"
    if principal.user_id is not None:
        return f"user:{principal.user_id}"
    return f"workspace:{principal.workspace_id}"


class TooManyRequests(HTTPException):
    status_code = HTTP_429_TOO_MANY_REQUESTS

    def __init__(self, detail: str, code: str, headers: dict[str, str]) -> None:
        super().__init__(detail=detail, headers=headers)
        self.code = code


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class QuotaExceeded(TooManyRequests):
    """The insert trigger refused a generation: the workspace used up a daily quota. The body
    names the limit, its value, the window's use and when the window resets; `Retry-After` is
    the seconds until then."""

    def __init__(self, limit: LimitName, usage: Usage, now: datetime | None = None) -> None:
        now = now or datetime.now(UTC)
        retry_after = max(1, math.ceil((usage.window.end - now).total_seconds()))
        value: int | float | None
        used: int | float
        if limit == "generations_per_day":
            value, used = usage.limits.generations_per_day, usage.generations
            told = f"{used} of {value} generations"
        else:
            value, used = usage.limits.usd_per_day, round(usage.estimated_usd, 6)
            told = f"${used:g} of ${value or 0:g} estimated spend"
        told = told if value is not None else f"{used}"
        detail = (
            f"this would exceed the workspace's {limit} quota ({told} used in the UTC day from "
            f"{_utc(usage.window.start)}); it resets at {_utc(usage.window.end)}"
        )
        super().__init__(detail, "quota_exceeded", {"Retry-After": str(retry_after)})
        self.problem_extension = {
            "limit": limit,
            "limit_value": value,
            "usage": used,
            "window": QuotaWindow(start=usage.window.start, end=usage.window.end),
            "resets_at": usage.window.end,
        }


class RateDecision(msgspec.Struct, frozen=True):
    allowed: bool
    remaining: int
    reset_s: int

    def headers(self, limit: int) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_s),
            "RateLimit-Policy": f"{limit};w={WINDOW_S}",
        }


async def hit_rate(pool: AsyncConnectionPool, subject: str, limit: int) -> RateDecision:
    allowed, remaining, reset_s = await store.hit_api_rate(
        pool, f"create:{subject}", limit, WINDOW_S
    )
    return RateDecision(allowed=allowed, remaining=remaining, reset_s=reset_s)


class CreationRateLimit:
    """Route middleware for the requests that create work (generations, edits, retries)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope["litestar_app"].state
        limit: int = state.settings.rate_limit_create_per_min
        if limit <= 0:
            await self.app(scope, receive, send)
            return
        decision = await hit_rate(state.pool, limit_subject(scope["user"]), limit)
        headers = decision.headers(limit)
        if not decision.allowed:
            raise TooManyRequests(
                f"at most {limit} creation requests per {WINDOW_S} s; "
                f"retry in {decision.reset_s} s",
                "rate_limited",
                {**headers, "Retry-After": str(decision.reset_s)},
            )
        extra = [(name.lower().encode(), value.encode()) for name, value in headers.items()]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class StreamSlot:
    """One open stream of a principal; released once, whichever comes first: the stream ends,
    a disconnect cancels it, or it is dropped without ever starting (garbage collected)."""

    def __init__(self, slots: StreamSlots, subject: str) -> None:
        self._slots = slots
        self._subject = subject
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._slots.release(self._subject)

    def hold(self, stream: AsyncIterator[T]) -> AsyncIterator[T]:
        async def held() -> AsyncIterator[T]:
            try:
                async for item in stream:
                    yield item
            finally:
                self.release()

        wrapped = held()
        weakref.finalize(wrapped, self.release)
        return wrapped


class StreamSlots:
    """Open SSE streams per principal in this process (`SSE_MAX_STREAMS_PER_KEY`)."""

    def __init__(self) -> None:
        self.open: Counter[str] = Counter()

    def acquire(self, principal: Principal, limit: int) -> StreamSlot:
        """A slot for one more stream, or 429 when the principal holds `limit` already (0:
        unlimited). Take it just before subscribing, so nothing in between can leak it."""
        subject = limit_subject(principal)
        if limit > 0 and self.open[subject] >= limit:
            raise TooManyRequests(
                f"at most {limit} concurrent event streams per key; close one first",
                "too_many_streams",
                {"Retry-After": str(STREAM_RETRY_AFTER_S)},
            )
        self.open[subject] += 1
        return StreamSlot(self, subject)

    def release(self, subject: str) -> None:
        self.open[subject] -= 1
        if self.open[subject] <= 0:
            del self.open[subject]


__all__ = [
    "CreationRateLimit",
    "QuotaExceeded",
    "StreamSlot",
    "StreamSlots",
    "TooManyRequests",
    "limit_subject",
]
