"""API keys: random, shown once, stored as a SHA-256 hash (they carry 256 bits of entropy, so a
fast hash is the right one: nothing to brute-force)."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from uuid import UUID

import msgspec
import psycopg
from psycopg.rows import class_row, scalar_row

from worker.core.sqlfiles import query

KEY_PREFIX = "ij_"
# How much of a key is stored in clear (`api_keys.prefix`), for people to recognise it.
PREFIX_LENGTH = 10


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


async def create_api_key(
    conn: psycopg.AsyncConnection[object], workspace_id: UUID, name: str = ""
) -> str:
    key = new_key()
    await conn.execute(
        query("insert_api_key"),
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


async def list_api_keys(
    conn: psycopg.AsyncConnection[object], workspace_id: UUID
) -> list[ApiKeyInfo]:
    cur = conn.cursor(row_factory=class_row(ApiKeyInfo))
    await cur.execute(query("list_api_keys"), {"workspace_id": workspace_id})
    return await cur.fetchall()


async def revoke_api_key(
    conn: psycopg.AsyncConnection[object], ref: str
) -> tuple[ApiKeyInfo, bool]:
    """Revokes the key named by `ref`: its id, its prefix as `list` prints it, or the key itself.
    Returns the key and whether this call revoked it (False: it was revoked already)."""
    ref = ref.strip()
    try:
        key_id: UUID | None = UUID(ref)
    except ValueError:
        key_id = None
    cur = conn.cursor(row_factory=class_row(ApiKeyInfo))
    await cur.execute(
        query("find_api_keys_to_revoke"), {"id": key_id, "prefix": ref, "key_hash": hash_key(ref)}
    )
    matches = await cur.fetchall()
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
    done = conn.cursor(row_factory=scalar_row)
    await done.execute(query("revoke_api_key"), {"id": key.id})
    revoked_at: datetime | None = await done.fetchone()
    if revoked_at is None:  # revoked concurrently
        return key, False
    return msgspec.structs.replace(key, revoked_at=revoked_at), True
