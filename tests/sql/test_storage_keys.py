"""Migration 023: the storage key of a file this project stored, recovered from its URL."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from tests.factories import insert_generation

CASES = [
    ("http://127.0.0.1:8000/files/ws/p/g.png", "ws/p/g.png"),
    ("https://api.example.com/prefix/files/ws/p/g-thumb.webp", "ws/p/g-thumb.webp"),
    ("https://ref.supabase.co/storage/v1/object/public/images/ws/p/g.png", "ws/p/g.png"),
    ("https://ref.supabase.co/storage/v1/object/sign/images/ws/p/g.png?token=abc", "ws/p/g.png"),
    ("https://elsewhere.example.com/ws/p/g.png", None),
    ("https://x.test/files/../etc/passwd", None),
    (None, None),
]


@pytest.mark.parametrize(("url", "key"), CASES)
async def test_storage_key_of(
    conn: psycopg.AsyncConnection, url: str | None, key: str | None
) -> None:
    cursor = await conn.execute("SELECT imagejobs_storage_key_of(%s)", (url,))
    assert await cursor.fetchone() == (key,)


@pytest.mark.parametrize("key", ["../x.png", "/abs.png", "a/../b.png", "a b.png"])
async def test_an_unsafe_key_is_refused_by_the_table(
    conn: psycopg.AsyncConnection, project_id: uuid.UUID, key: str
) -> None:
    generation_id = await insert_generation(conn, project_id)
    with pytest.raises(psycopg.errors.CheckViolation):
        await conn.execute(
            "UPDATE image_generations SET result_key = %s WHERE id = %s", (key, generation_id)
        )
