"""API keys: random, shown once, stored as a SHA-256 hash (they carry 256 bits of entropy, so a
fast hash is the right one: nothing to brute-force)."""

from __future__ import annotations

import hashlib
import secrets
from uuid import UUID

import psycopg

from worker.sqlfiles import query

KEY_PREFIX = "ij_"


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
        {"workspace_id": workspace_id, "name": name, "prefix": key[:10], "key_hash": hash_key(key)},
    )
    return key
