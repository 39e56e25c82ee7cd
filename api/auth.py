"""Bearer API keys. A key resolves to the one workspace it belongs to; lookups are cached for a
short TTL so a request costs no query (revocation therefore takes effect within that TTL)."""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID

import msgspec
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from psycopg_pool import AsyncConnectionPool

from worker.apikeys import hash_key
from worker.sqlfiles import query

CACHE_TTL_S = 30.0


class Principal(msgspec.Struct, frozen=True):
    workspace_id: UUID
    key_id: UUID | None = None
    user_id: UUID | None = None


class KeyCache:
    def __init__(self, ttl: float = CACHE_TTL_S) -> None:
        self.ttl = ttl
        self._entries: dict[bytes, tuple[float, Principal | None]] = {}

    async def resolve(self, pool: AsyncConnectionPool, key: str) -> Principal | None:
        digest = hash_key(key)
        now = time.monotonic()
        hit = self._entries.get(digest)
        if hit and hit[0] > now:
            return hit[1]
        async with pool.connection() as conn:
            cur = await conn.execute(query("find_api_key"), {"key_hash": digest})
            row = await cur.fetchone()
            principal = None
            if row is not None:
                principal = Principal(workspace_id=row[1], key_id=row[0])
                await conn.execute(query("touch_api_key"), {"id": row[0]})
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[digest] = (now + self.ttl, principal)
        return principal


# Route handlers with this `opt` flag also take the token from `?access_token=`: browsers'
# EventSource cannot send an Authorization header. Only the SSE GET routes set it.
QUERY_TOKEN_OPT = "query_token"


def bearer_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    """The token of `Authorization: Bearer <token>`, or, on routes that opt in (SSE GETs only),
    of the `access_token` query parameter (RFC 6750 section 2.3)."""
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    handler = connection.scope.get("route_handler")
    if (
        handler is not None
        and handler.opt.get(QUERY_TOKEN_OPT)
        and connection.scope.get("method") == "GET"
    ):
        query_token = connection.query_params.get("access_token", "").strip()
        return query_token or None
    return None


class ApiKeyAuthentication(AbstractAuthenticationMiddleware):
    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        token = bearer_token(connection)
        if token is None:
            raise NotAuthorizedException(
                "missing bearer token", headers={"WWW-Authenticate": 'Bearer realm="imagejobs"'}
            )
        state = connection.app.state
        principal = await state.key_cache.resolve(state.pool, token)
        if principal is None:
            raise NotAuthorizedException(
                "invalid or revoked API key",
                headers={"WWW-Authenticate": 'Bearer realm="imagejobs", error="invalid_token"'},
            )
        return AuthenticationResult(user=principal, auth=token)
