"""API keys: random, shown once, stored as a SHA-256 hash (they carry 256 bits of entropy, so a
fast hash is the right one: nothing to brute-force)."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from uuid import UUID

import msgspec

from worker.core.store import Db, connection, execute, fetch_all, fetch_row

KEY_PREFIX = "ij_"
# How much of a key is stored in clear (`api_keys.prefix`), for people to recognise it.
PREFIX_LENGTH = 10


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


async def create_api_key(db: Db, workspace_id: UUID, name: str = "") -> str:
    key = new_key()
    await execute(
        db,
        "insert_api_key",
        {
            "workspace_id": workspace_id,
            "name": name,
            "prefix": key[:PREFIX_LENGTH],
            "key_hash": hash_key(key),
        },
    )
    return key


class ApiKeyInfo(msgspec.Struct, frozen=True):
    """What may be shown about a key: never the key, never its hash."""

    id: UUID
    workspace_id: UUID
    prefix: str
    name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class RevokeError(Exception):
    """The argument names no key, or more than one."""


async def find_api_key(db: Db, key: str) -> tuple[UUID, UUID] | None:
    """(key id, workspace id) of a live key, whose last use it records; None for any other."""
    async with connection(db) as conn:
        row = await fetch_row(conn, "find_api_key", {"key_hash": hash_key(key)})
        if row is None:
            return None
        await execute(conn, "touch_api_key", {"id": row[0]})
    return row[0], row[1]


async def list_api_keys(db: Db, workspace_id: UUID) -> list[ApiKeyInfo]:
    return await fetch_all(db, "list_api_keys", ApiKeyInfo, {"workspace_id": workspace_id})


async def revoke_api_key(db: Db, ref: str) -> tuple[ApiKeyInfo, bool]:
    """Revokes the key named by `ref`: its id, its prefix as `list` prints it, or the key itself.
    Returns the key and whether this call revoked it (False: it was revoked already)."""
    ref = ref.strip()
    try:
        key_id: UUID | None = UUID(ref)
    except ValueError:
        key_id = None
    matches = await fetch_all(
        db,
        "find_api_keys_to_revoke",
        ApiKeyInfo,
        {"id": key_id, "prefix": ref, "key_hash": hash_key(ref)},
    )
    # Never echo a whole key back (terminals and CI logs keep what they print).
    whole_key = ref.startswith(KEY_PREFIX) and len(ref) > PREFIX_LENGTH
    shown = ref[:PREFIX_LENGTH] + "..." if whole_key else ref
    if not matches:
        raise RevokeError(f"no API key has the id, prefix or value {shown!r}")
    if len(matches) > 1:
        ids = ", ".join(str(m.id) for m in matches)
        raise RevokeError(f"{shown!r} is the prefix of {len(matches)} keys; give the id: {ids}")
    key = matches[0]
    if key.revoked_at is not None:
        return key, False
    revoked = await fetch_row(db, "revoke_api_key", {"id": key.id})
    if revoked is None:  # revoked concurrently
        return key, False
    return msgspec.structs.replace(key, revoked_at=revoked[0]), True
