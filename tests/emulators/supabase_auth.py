"""An emulator of Supabase Auth's token signing: the JWKS endpoint
`GET /auth/v1/.well-known/jwks.json` serving the public halves of keys generated here (ES256 on
P-256, RS256), and the means to mint access tokens as Supabase does (`sub`, `aud:
authenticated`, `iss: {url}/auth/v1`, `role`, `exp`), with the legacy HS256 secret or a key.

JWKS entries look like Supabase's own: `{kty, crv|n,e, alg, kid, use: sig, key_ops: [verify],
ext: true}`. Keys can be rotated in (`add_key`) and out (`remove_key`); `failing` makes the
endpoint answer 500; `fetches` counts the requests it served.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from litestar import Litestar, Response, get

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unsigned_segments(header: dict[str, Any], claims: dict[str, Any]) -> str:
    """`base64url(header).base64url(claims)`, for tokens PyJWT would refuse to make."""
    return ".".join(
        b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
    )


@dataclass
class SigningKey:
    kid: str
    algorithm: str
    private: PrivateKey

    def public_jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        if isinstance(public, ec.EllipticCurvePublicKey):
            jwk = ECAlgorithm.to_jwk(public, as_dict=True)
        else:
            jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
        extra = {"alg": self.algorithm, "kid": self.kid, "use": "sig", "key_ops": ["verify"]}
        return {**jwk, **extra, "ext": True}


def generate_key(algorithm: str) -> SigningKey:
    private: PrivateKey
    if algorithm == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
    elif algorithm == "RS256":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        raise ValueError(f"no key generation for {algorithm}")
    return SigningKey(kid=str(uuid.uuid4()), algorithm=algorithm, private=private)


@dataclass
class SupabaseAuth:
    url: str = ""
    # The legacy "JWT secret" of a Supabase project (at least 32 characters).
    secret: str = "super-secret-jwt-token-with-at-least-32-characters-long"
    keys: list[SigningKey] = field(default_factory=list)
    fetches: int = 0
    failing: bool = False

    @property
    def issuer(self) -> str:
        return f"{self.url}/auth/v1"

    def add_key(self, algorithm: str) -> SigningKey:
        key = generate_key(algorithm)
        self.keys.append(key)
        return key

    def remove_key(self, key: SigningKey) -> None:
        self.keys.remove(key)

    def key(self, algorithm: str) -> SigningKey:
        """The first published key of that algorithm."""
        return next(k for k in self.keys if k.algorithm == algorithm)

    def claims(self, user_id: uuid.UUID, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "sub": str(user_id),
            "aud": "authenticated",
            "iss": self.issuer,
            "role": "authenticated",
            "email": f"{user_id.hex[:8]}@example.com",
            "iat": now,
            "exp": now + 3600,
            "session_id": str(uuid.uuid4()),
        }
        claims.update(overrides)
        return {name: value for name, value in claims.items() if value is not None}

    def token(
        self,
        user_id: uuid.UUID,
        algorithm: str = "HS256",
        key: SigningKey | None = None,
        **overrides: Any,
    ) -> str:
        """An access token as Supabase Auth issues it; a claim overridden with None is left out."""
        claims = self.claims(user_id, **overrides)
        if algorithm == "HS256":
            return jwt.encode(claims, self.secret, algorithm="HS256")
        signing = key or self.key(algorithm)
        return jwt.encode(
            claims, signing.private, algorithm=algorithm, headers={"kid": signing.kid}
        )

    def document(self) -> dict[str, Any]:
        self.fetches += 1
        return {"keys": [key.public_jwk() for key in self.keys]}


def build_supabase_auth_emulator(state: SupabaseAuth) -> Litestar:
    @get("/auth/v1/.well-known/jwks.json")
    async def jwks() -> Response[dict[str, Any]]:
        if state.failing:
            state.fetches += 1
            return Response({"message": "upstream error"}, status_code=500)
        return Response(state.document(), headers={"Cache-Control": "public, max-age=600"})

    return Litestar([jwks], openapi_config=None)


def forge(header: dict[str, Any], claims: dict[str, Any], algorithm: str, key: Any) -> str:
    """Signs with `algorithm` whatever the header claims, with any key material (PyJWT's own
    encode would refuse mismatched or dangerous combinations, which is what attackers try)."""
    segments = unsigned_segments(header, claims)
    signature = jwt.get_algorithm_by_name(algorithm).sign(segments.encode(), key)
    return f"{segments}.{b64url(signature)}"
