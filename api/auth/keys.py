"""Bearer authentication: API keys and Supabase user JWTs, each resolved to one workspace.

- An API key belongs to exactly one workspace. Lookups are by SHA-256 hash and cached for
  AUTH_CACHE_TTL_S, so a request costs no query and a revoked key stops working within that TTL.
  An open SSE stream checks its credential again on that clock (`StreamCredential`).
- A user JWT (three base64url segments) is verified by api/auth/jwt.py; `sub` is the user, and
  `workspace_members` says which workspaces they may use. The request picks one with the
  `X-Workspace-Id` header, which may be left out when the user belongs to exactly one.
"""

from __future__ import annotations

import re
import time
from typing import Any, Generic, TypeVar
from uuid import UUID

import msgspec
import psycopg
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.exceptions import (
    ClientException,
    NotAuthorizedException,
    PermissionDeniedException,
    ServiceUnavailableException,
)
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from psycopg_pool import AsyncConnectionPool

from api.auth.jwt import (
    LEEWAY_S,
    JwksUnavailable,
    JwtVerifier,
    TokenError,
    TokenExpired,
    expires_at,
    looks_like_jwt,
)
from worker.core import store
from worker.core.apikeys import find_api_key, hash_key

CACHE_TTL_S = 30.0
# A stream re-checks its credential every AUTH_CACHE_TTL_S, but not more often than this (a TTL of
# 0 turns the cache off; it should not turn every stream into a busy loop of queries).
STREAM_RECHECK_MIN_S = 1.0
CACHE_MAX_ENTRIES = 10_000
WORKSPACE_HEADER = "X-Workspace-Id"
REALM = 'Bearer realm="imagejobs"'


class Principal(msgspec.Struct, frozen=True):
    workspace_id: UUID
    key_id: UUID | None = None
    user_id: UUID | None = None


K = TypeVar("K")
V = TypeVar("V")


class _TtlCache(Generic[K, V]):
    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[K, tuple[float, V]] = {}

    def get(self, key: K) -> tuple[bool, V | None]:
        hit = self._entries.get(key)
        if hit and hit[0] > time.monotonic():
            return True, hit[1]
        return False, None

    def put(self, key: K, value: V) -> None:
        if len(self._entries) > CACHE_MAX_ENTRIES:
            self._entries.clear()
        self._entries[key] = (time.monotonic() + self.ttl, value)


class KeyCache:
    """API key → principal. The dictionary is keyed by the key's SHA-256 digest, never by the key:
    a timing difference in that lookup could only tell an attacker about digests, not keys."""

    def __init__(self, ttl: float = CACHE_TTL_S) -> None:
        self._cache: _TtlCache[bytes, Principal | None] = _TtlCache(ttl)

    async def resolve(
        self, pool: AsyncConnectionPool, key: str, *, fresh: bool = False
    ) -> Principal | None:
        """`fresh`: from the database even when cached (and the cache updated)."""
        digest = hash_key(key)
        hit, cached = self._cache.get(digest)
        if hit and not fresh:
            return cached
        found = await find_api_key(pool, key)
        principal = Principal(workspace_id=found[1], key_id=found[0]) if found else None
        self._cache.put(digest, principal)
        return principal


class MembershipCache:
    """User id → the workspaces they are a member of (removal takes effect within the TTL)."""

    def __init__(self, ttl: float = CACHE_TTL_S) -> None:
        self._cache: _TtlCache[UUID, frozenset[UUID]] = _TtlCache(ttl)

    async def workspaces(
        self, pool: AsyncConnectionPool, user_id: UUID, *, fresh: bool = False
    ) -> frozenset[UUID]:
        hit, cached = self._cache.get(user_id)
        if hit and cached is not None and not fresh:
            return cached
        workspaces = await store.user_workspaces(pool, user_id)
        self._cache.put(user_id, workspaces)
        return workspaces


_UNSAFE_IN_DESCRIPTION = re.compile(r"[^\x20-\x21\x23-\x5b\x5d-\x7e]")


def _unauthorized(detail: str) -> NotAuthorizedException:
    # error_description allows printable ASCII but `"` and `\` (RFC 6750 section 3).
    description = _UNSAFE_IN_DESCRIPTION.sub("?", detail)
    return NotAuthorizedException(
        detail,
        headers={
            "WWW-Authenticate": f'{REALM}, error="invalid_token", error_description="{description}"'
        },
    )


def _requested_workspace(connection: ASGIConnection[Any, Any, Any, Any]) -> UUID | None:
    raw = connection.headers.get(WORKSPACE_HEADER)
    if raw is None:
        return None
    try:
        return UUID(raw.strip())
    except ValueError:
        raise ClientException(
            f"{WORKSPACE_HEADER}: must be a workspace UUID",
            extra=[{"key": WORKSPACE_HEADER, "message": "must be a workspace UUID"}],
        ) from None


def choose_workspace(member_of: frozenset[UUID], requested: UUID | None) -> UUID:
    """The workspace a user's request acts in: the one named by X-Workspace-Id, which must be one
    of theirs, or their only one."""
    if requested is not None:
        if requested not in member_of:
            raise PermissionDeniedException(f"not a member of workspace {requested}")
        return requested
    if not member_of:
        raise PermissionDeniedException("not a member of any workspace")
    if len(member_of) > 1:
        message = f"required: you are a member of {len(member_of)} workspaces"
        raise ClientException(
            f"{WORKSPACE_HEADER}: {message}",
            extra=[{"key": WORKSPACE_HEADER, "message": message}],
        )
    return next(iter(member_of))


async def _user_principal(connection: ASGIConnection[Any, Any, Any, Any], token: str) -> Principal:
    state = connection.app.state
    verifier: JwtVerifier | None = state.jwt_verifier
    if verifier is None:
        raise _unauthorized("user tokens are not accepted (Supabase auth is not configured)")
    try:
        user_id = await verifier.user_id(token)
    except TokenError as exc:
        raise _unauthorized(str(exc)) from None
    except JwksUnavailable as exc:
        raise ServiceUnavailableException(str(exc), headers={"Retry-After": "5"}) from None
    requested = _requested_workspace(connection)
    member_of = await state.membership_cache.workspaces(state.pool, user_id)
    return Principal(workspace_id=choose_workspace(member_of, requested), user_id=user_id)


async def _key_principal(connection: ASGIConnection[Any, Any, Any, Any], token: str) -> Principal:
    state = connection.app.state
    principal: Principal | None = await state.key_cache.resolve(state.pool, token)
    if principal is None:
        raise _unauthorized("invalid or revoked API key")
    requested = _requested_workspace(connection)
    if requested is not None and requested != principal.workspace_id:
        raise PermissionDeniedException(f"this API key is not for workspace {requested}")
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
    """`Authorization: Bearer <API key or Supabase user JWT>` on every /v1 route."""

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        token = bearer_token(connection)
        if token is None:
            raise NotAuthorizedException(
                "missing bearer token", headers={"WWW-Authenticate": REALM}
            )
        if looks_like_jwt(token):
            principal = await _user_principal(connection, token)
        else:
            principal = await _key_principal(connection, token)
        return AuthenticationResult(user=principal, auth=token)


class CredentialEnded(msgspec.Struct, frozen=True):
    """Why a stream's credential no longer holds: the `data` of its last event."""

    code: str  # credential_revoked, credential_expired, credential_invalid
    detail: str
    status: int = 401


class StreamCredential:
    """The credential a stream was opened with, checked again while the stream runs: at least
    every AUTH_CACHE_TTL_S, and at a user token's expiry. API keys and memberships are read from
    the database, not the cache, so a revocation ends the stream within one interval."""

    def __init__(self, state: State, token: str, principal: Principal) -> None:
        self._state = state
        self._token = token
        self._principal = principal
        self._interval_s = max(float(state.settings.auth_cache_ttl_s), STREAM_RECHECK_MIN_S)
        self._expires_at = expires_at(token) if principal.user_id is not None else None

    def next_check_s(self) -> float:
        if self._expires_at is None:
            return self._interval_s
        # The verifier refuses a token once `exp` + leeway has passed: check just after that
        # (and, if that check could not be made, at the usual interval: no busy loop).
        until_expired = self._expires_at + LEEWAY_S - time.time() + 0.05
        return min(self._interval_s, until_expired) if until_expired > 0 else self._interval_s

    async def check(self) -> CredentialEnded | None:
        """Why the stream must end, or None: still valid, or not checkable now (the database or
        the JWKS is away; streams outlive outages, and the next check tries again)."""
        state = self._state
        try:
            if self._principal.user_id is None:
                principal = await state.key_cache.resolve(state.pool, self._token, fresh=True)
                if principal is None:
                    return CredentialEnded("credential_revoked", "the API key was revoked")
                return None
            verifier: JwtVerifier | None = state.jwt_verifier
            if verifier is None:
                return CredentialEnded("credential_invalid", "user tokens are not accepted")
            user_id = await verifier.user_id(self._token)
            member_of = await state.membership_cache.workspaces(state.pool, user_id, fresh=True)
        except TokenExpired as exc:
            return CredentialEnded("credential_expired", str(exc))
        except TokenError as exc:
            return CredentialEnded("credential_invalid", str(exc))
        except (psycopg.OperationalError, JwksUnavailable):
            return None
        if self._principal.workspace_id not in member_of:
            workspace = self._principal.workspace_id
            return CredentialEnded(
                "credential_revoked", f"no longer a member of workspace {workspace}"
            )
        return None
