"""Signature checks for incoming provider webhooks, done before anything else is read.

- Standard Webhooks (`generic`): HMAC-SHA256 over `{id}.{timestamp}.{body}` with WEBHOOK_SECRET,
  via the `standardwebhooks` package (constant-time compare, ±5 minutes).
- fal: ED25519 over `{request_id}\\n{user_id}\\n{timestamp}\\n{sha256(body)}` with a key of fal's
  JWKS (cached; fetched again when no cached key verifies).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import time
from collections.abc import Mapping

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from standardwebhooks import Webhook, WebhookVerificationError

TOLERANCE_S = 300
JWKS_TTL_S = 24 * 3600


class SignatureError(Exception):
    """Missing, invalid or stale signature: answer 401 and change nothing."""


def verify_standard(secret: str | None, body: bytes, headers: Mapping[str, str]) -> str:
    """Checks a Standard Webhooks signature; returns the delivery id (`webhook-id`)."""
    if not secret:
        raise SignatureError("incoming webhooks are not configured (WEBHOOK_SECRET)")
    wanted = {
        k: headers.get(k, "") for k in ("webhook-id", "webhook-timestamp", "webhook-signature")
    }
    try:
        Webhook(secret).verify(body, wanted, json_parse=False)
    except (WebhookVerificationError, ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise SignatureError(f"invalid signature: {exc}") from exc
    return wanted["webhook-id"]


def _b64url(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


class FalVerifier:
    def __init__(self, jwks_url: str, client: httpx.AsyncClient | None = None) -> None:
        self.jwks_url = jwks_url
        self.client = client or httpx.AsyncClient(timeout=10)
        self._keys: list[Ed25519PublicKey] = []
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def _load_keys(self, *, force: bool) -> list[Ed25519PublicKey]:
        async with self._lock:
            fresh = time.monotonic() - self._fetched_at < JWKS_TTL_S
            if self._keys and fresh and not force:
                return self._keys
            try:
                response = await self.client.get(self.jwks_url)
                response.raise_for_status()
                keys = [
                    Ed25519PublicKey.from_public_bytes(_b64url(str(jwk["x"])))
                    for jwk in response.json().get("keys", [])
                    if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519" and jwk.get("x")
                ]
            except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError) as exc:
                if self._keys:
                    return self._keys
                raise SignatureError("fal's signing keys are unavailable") from exc
            self._keys, self._fetched_at = keys, time.monotonic()
            return keys

    async def verify(self, body: bytes, headers: Mapping[str, str]) -> str:
        """Checks fal's signature; returns the delivery id (fal's request id)."""
        request_id = headers.get("x-fal-webhook-request-id", "")
        user_id = headers.get("x-fal-webhook-user-id", "")
        timestamp = headers.get("x-fal-webhook-timestamp", "")
        signature_hex = headers.get("x-fal-webhook-signature", "")
        if not (request_id and user_id and timestamp and signature_hex):
            raise SignatureError("missing fal signature headers")
        try:
            if abs(time.time() - int(timestamp)) > TOLERANCE_S:
                raise SignatureError("stale or future timestamp")
            signature = bytes.fromhex(signature_hex)
        except ValueError as exc:
            raise SignatureError("malformed fal signature headers") from exc
        message = "\n".join(
            [request_id, user_id, timestamp, hashlib.sha256(body).hexdigest()]
        ).encode()
        for force in (False, True):
            for key in await self._load_keys(force=force):
                try:
                    key.verify(signature, message)
                    return request_id
                except InvalidSignature:
                    continue
        raise SignatureError("invalid fal signature")
