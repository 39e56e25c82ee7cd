"""Signature checks for incoming provider webhooks, done before anything else is read.

- Standard Webhooks (`generic`): HMAC-SHA256 over `{id}.{timestamp}.{body}` with WEBHOOK_SECRET,
  via the `standardwebhooks` package (constant-time compare, ±5 minutes).
- fal: ED25519 over `{request_id}\\n{user_id}\\n{timestamp}\\n{sha256(body)}` with a key of fal's
  JWKS (api/auth/jwks.py: cached; fetched again when no cached key verifies, at most once per
  cooldown, and never in front of a signature a cached key verifies).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from collections.abc import Mapping
from typing import Any

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from standardwebhooks import Webhook, WebhookVerificationError

from api.auth.jwks import JwksCache

TOLERANCE_S = 300
JWKS_TTL_S = 24 * 3600
# A signature no cached key verifies (a forgery, or a key fal rotated in) refreshes the JWKS at
# most once per this many seconds.
JWKS_COOLDOWN_S = 30.0


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


def _fal_key(entry: Any) -> tuple[str, Ed25519PublicKey] | None:
    """fal's JWKS has Ed25519 keys without key ids: each is known by its public bytes."""
    if not isinstance(entry, dict) or entry.get("kty") != "OKP" or entry.get("crv") != "Ed25519":
        return None
    x = entry.get("x")
    if not isinstance(x, str) or not x:
        return None
    try:
        return x, Ed25519PublicKey.from_public_bytes(_b64url(x))
    except (ValueError, binascii.Error):
        return None


class FalVerifier:
    def __init__(self, jwks_url: str, client: httpx.AsyncClient | None = None) -> None:
        self.jwks = JwksCache(
            jwks_url, _fal_key, ttl_s=JWKS_TTL_S, cooldown_s=JWKS_COOLDOWN_S, client=client
        )

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

        def verifies(keys: dict[str, Ed25519PublicKey]) -> str | None:
            for key in keys.values():
                try:
                    key.verify(signature, message)
                    return request_id
                except InvalidSignature:
                    continue
            return None

        if await self.jwks.find(verifies) is not None:
            return request_id
        if not self.jwks.available:
            raise SignatureError("fal's signing keys are unavailable")
        raise SignatureError("invalid fal signature")
