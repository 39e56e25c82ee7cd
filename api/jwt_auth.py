"""Supabase user JWTs: verified with SUPABASE_JWT_SECRET (HS256) or with a key of the project's
JWKS at `{SUPABASE_URL}/auth/v1/.well-known/jwks.json` (ES256, RS256).

The algorithm a token may use follows from the key kind that verifies it: HS256 only with the
shared secret, ES256/RS256 only with a JWKS key of that very algorithm; anything else (`none`,
HS256 signed with a public key, a key id pointing at a key of another type) is refused before
any signature is checked. The JWKS is fetched with httpx (the API is async), cached, and fetched
again when a token names a key id we do not know, at most once per cooldown.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any
from uuid import UUID

import httpx
import jwt

AUDIENCE = "authenticated"
ASYMMETRIC_ALGORITHMS = frozenset({"ES256", "RS256"})
# Clock skew tolerated on exp/nbf/iat between Supabase Auth and us.
LEEWAY_S = 30.0
JWKS_TTL_S = 600.0
# A token with an unknown `kid` refreshes the JWKS at most once per this many seconds, so a
# stream of made-up key ids cannot turn into a stream of requests to Supabase.
JWKS_COOLDOWN_S = 30.0
# After a failed fetch, the next attempt waits this long (the stale keys stay in use).
JWKS_RETRY_S = 5.0

_JWT_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")


def looks_like_jwt(token: str) -> bool:
    """Three base64url segments (the last may be empty, as in `alg: none`). API keys have no dot."""
    return _JWT_SHAPE.match(token) is not None


def expires_at(token: str) -> float | None:
    """The `exp` of a token that was verified already (None when it has none to read)."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return None
    exp = claims.get("exp")
    return float(exp) if isinstance(exp, int | float) else None


class TokenError(Exception):
    """The token is not acceptable: answer 401 with this message."""


class TokenExpired(TokenError):
    """The token's `exp` (plus the leeway) has passed."""


class JwksUnavailable(Exception):
    """The signing keys could not be fetched and none is cached for this key id: answer 503."""


def _usable_key(entry: Any) -> jwt.PyJWK | None:
    if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
        return None
    if entry.get("use", "sig") != "sig":
        return None
    kty, crv = entry.get("kty"), entry.get("crv")
    if not (kty == "RSA" or (kty == "EC" and crv == "P-256")):
        return None  # never a symmetric ("oct") key from a public document
    try:
        key = jwt.PyJWK(entry)
    except (jwt.PyJWKError, jwt.InvalidKeyError):
        return None
    return key if key.algorithm_name in ASYMMETRIC_ALGORITHMS else None


class JwksCache:
    """The project's public signing keys by key id."""

    def __init__(
        self,
        url: str,
        *,
        ttl_s: float = JWKS_TTL_S,
        cooldown_s: float = JWKS_COOLDOWN_S,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.ttl_s = ttl_s
        self.cooldown_s = cooldown_s
        self.timeout_s = timeout_s
        self.clock = clock
        self.fetches = 0
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._failed_at: float | None = None
        self._refreshed_on_miss_at: float | None = None
        self._lock = asyncio.Lock()

    def _stale(self, now: float) -> bool:
        return self._fetched_at is None or now - self._fetched_at >= self.ttl_s

    def _may_retry(self, now: float) -> bool:
        return self._failed_at is None or now - self._failed_at >= JWKS_RETRY_S

    async def _fetch(self) -> None:
        self.fetches += 1
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s) as client:
                response = await client.get(self.url)
                response.raise_for_status()
                document = response.json()
            entries = document["keys"]
            if not isinstance(entries, list):
                raise TypeError("keys is not a list")
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            self._failed_at = self.clock()
            return
        keys = {str(e["kid"]): k for e in entries if (k := _usable_key(e)) is not None}
        self._keys, self._fetched_at, self._failed_at = keys, self.clock(), None

    async def key(self, kid: str) -> jwt.PyJWK:
        if self._stale(self.clock()) and self._may_retry(self.clock()):
            async with self._lock:
                if self._stale(self.clock()) and self._may_retry(self.clock()):
                    await self._fetch()
        found = self._keys.get(kid)
        if found is not None:
            return found
        async with self._lock:
            found = self._keys.get(kid)  # fetched meanwhile by another request
            now = self.clock()
            miss_allowed = (
                self._refreshed_on_miss_at is None
                or now - self._refreshed_on_miss_at >= self.cooldown_s
            )
            if found is None and miss_allowed and self._may_retry(now):
                self._refreshed_on_miss_at = now
                await self._fetch()
                found = self._keys.get(kid)
        if found is not None:
            return found
        if self._fetched_at is None:
            raise JwksUnavailable("the project's signing keys could not be fetched")
        raise TokenError("unknown signing key (kid)")


class JwtVerifier:
    """Verifies a Supabase access token and returns its user id (`sub`)."""

    def __init__(self, secret: str | None, supabase_url: str | None) -> None:
        self.secret = secret
        self.issuer = f"{supabase_url}/auth/v1" if supabase_url else None
        self.jwks = JwksCache(f"{self.issuer}/.well-known/jwks.json") if self.issuer else None

    @classmethod
    def configured(cls, secret: str | None, supabase_url: str | None) -> JwtVerifier | None:
        """None when neither SUPABASE_JWT_SECRET nor SUPABASE_URL is set: user tokens refused."""
        return cls(secret, supabase_url) if secret or supabase_url else None

    async def _key(self, header: dict[str, Any]) -> jwt.PyJWK | str:
        algorithm = header.get("alg")
        if algorithm == "HS256":
            if not self.secret:
                raise TokenError("HS256 tokens are not accepted (no SUPABASE_JWT_SECRET)")
            return self.secret
        if algorithm not in ASYMMETRIC_ALGORITHMS:
            plain = isinstance(algorithm, str) and algorithm.isascii() and algorithm.isalnum()
            named = f" {algorithm!r}" if plain and len(str(algorithm)) <= 10 else ""
            raise TokenError(f"algorithm{named} is not accepted")
        if self.jwks is None:
            raise TokenError(f"{algorithm} tokens are not accepted (no SUPABASE_URL)")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenError("token header has no key id (kid)")
        key = await self.jwks.key(kid)
        if key.algorithm_name != algorithm:
            raise TokenError("token algorithm does not match its key")
        return key

    async def user_id(self, token: str) -> UUID:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise TokenError("malformed token") from exc
        key = await self._key(header)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[str(header["alg"])],
                audience=AUDIENCE,
                issuer=self.issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenExpired("token has expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise TokenError(f"token audience is not {AUDIENCE!r}") from exc
        except jwt.InvalidIssuerError as exc:
            raise TokenError("token issuer is not this project") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise TokenError(f"token has no {exc.claim!r} claim") from exc
        except jwt.InvalidSignatureError as exc:
            raise TokenError("token signature does not verify") from exc
        except jwt.InvalidTokenError as exc:
            raise TokenError("invalid token") from exc
        try:
            return UUID(str(claims["sub"]))
        except ValueError as exc:
            raise TokenError("token subject is not a user id") from exc
