"""Supabase user JWTs: verified with SUPABASE_JWT_SECRET (HS256) or with a key of the project's
JWKS at `{SUPABASE_URL}/auth/v1/.well-known/jwks.json` (ES256, RS256).

The algorithm a token may use follows from the key kind that verifies it: HS256 only with the
shared secret, ES256/RS256 only with a JWKS key of that very algorithm; anything else (`none`,
HS256 signed with a public key, a key id pointing at a key of another type) is refused before
any signature is checked. The JWKS is cached (api/auth/jwks.py) and fetched again when a token names
a key id we do not know, at most once per cooldown.
"""

from __future__ import annotations

import re
from typing import Any
from uuid import UUID

import jwt

from api.auth.jwks import JwksCache

AUDIENCE = "authenticated"
ASYMMETRIC_ALGORITHMS = frozenset({"ES256", "RS256"})
# Clock skew tolerated on exp/nbf/iat between Supabase Auth and us.
LEEWAY_S = 30.0
JWKS_TTL_S = 600.0
# A token with an unknown `kid` refreshes the JWKS at most once per this many seconds, so a
# stream of made-up key ids cannot turn into a stream of requests to Supabase.
JWKS_COOLDOWN_S = 30.0

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


def _keyed_entry(entry: Any) -> tuple[str, jwt.PyJWK] | None:
    key = _usable_key(entry)
    return (str(entry["kid"]), key) if key is not None else None


def supabase_jwks(url: str) -> JwksCache[jwt.PyJWK]:
    return JwksCache(url, _keyed_entry, ttl_s=JWKS_TTL_S, cooldown_s=JWKS_COOLDOWN_S)


class JwtVerifier:
    """Verifies a Supabase access token and returns its user id (`sub`)."""

    def __init__(self, secret: str | None, supabase_url: str | None) -> None:
        self.secret = secret
        self.issuer = f"{supabase_url}/auth/v1" if supabase_url else None
        self.jwks = supabase_jwks(f"{self.issuer}/.well-known/jwks.json") if self.issuer else None

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
        key = await self.jwks.find(lambda keys: keys.get(kid))
        if key is None:
            if not self.jwks.available:
                raise JwksUnavailable("the project's signing keys could not be fetched")
            raise TokenError("unknown signing key (kid)")
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
