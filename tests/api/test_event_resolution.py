"""`generation` events carry error_resolution: the catalogue's, as the database computes it."""

from __future__ import annotations

import msgspec
from psycopg_pool import AsyncConnectionPool

from api.streams.generation import from_notification
from worker.core.errors import RESOLUTIONS, ErrorCode, resolution_of


def notification(**data: object) -> dict[str, object]:
    return {
        "generation_id": "00000000-0000-0000-0000-000000000001",
        "event_id": 7,
        "kind": "status",
        "status": "failed",
        "step": "failed",
        "progress": 10,
        "data": data,
    }


def test_a_failed_event_says_what_to_do() -> None:
    event = from_notification(notification(error_code="timeout", error_message="too slow"))
    assert event.error_resolution == RESOLUTIONS[ErrorCode.TIMEOUT]


def test_no_code_or_an_unknown_one_has_no_resolution() -> None:
    assert resolution_of(None) is None
    assert resolution_of("not_a_code") is None
    encoded = msgspec.json.decode(msgspec.json.encode(from_notification(notification())))
    assert "error_resolution" not in encoded


async def test_the_python_table_is_the_database_one(pool: AsyncConnectionPool) -> None:
    async with pool.connection() as conn:
        for code in ErrorCode:
            cursor = await conn.execute("SELECT imagejobs_error_resolution(%s)", (code.value,))
            row = await cursor.fetchone()
            assert row is not None and row[0] == resolution_of(code.value), code
