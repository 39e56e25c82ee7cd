"""Helpers for the database-level tests: plain SQL, no application code in between."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, LiteralString, TypeAlias

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from tests.factories import create_project, insert_generation

Conn: TypeAlias = psycopg.AsyncConnection[Any]

__all__ = ["create_project", "insert_generation"]

STATUSES = ("pending", "processing", "completed", "failed", "cancelled")

# The legal transitions (CONTRACT section 5, plus the retry of a failed generation and the
# re-queue of a stalled processing one).
LEGAL: dict[str, tuple[str, ...]] = {
    "pending": ("processing", "failed", "cancelled"),
    "processing": ("completed", "failed", "cancelled", "pending"),
    "failed": ("pending",),
    "completed": (),
    "cancelled": ("pending",),
}

# How a freshly inserted (pending) generation reaches each status through legal transitions.
PATH_TO: dict[str, tuple[str, ...]] = {
    "pending": (),
    "processing": ("processing",),
    "completed": ("processing", "completed"),
    "failed": ("processing", "failed"),
    "cancelled": ("processing", "cancelled"),
}

COUNTER_COLUMNS = (
    "image_count",
    "pending_count",
    "processing_count",
    "completed_count",
    "failed_count",
    "cancelled_count",
)


@dataclass(frozen=True)
class Counters:
    """A project's status and counters."""

    status: str
    image_count: int
    pending_count: int
    processing_count: int
    completed_count: int
    failed_count: int
    cancelled_count: int

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Counters:
        return cls(str(row["status"]), *(int(row[c]) for c in COUNTER_COLUMNS))

    @classmethod
    def expected(cls, statuses: Iterable[str]) -> Counters:
        """What the contract says a project holding images of these statuses looks like."""
        tally = Counter(statuses)
        return cls(
            status=expected_project_status(tally.elements()),
            image_count=sum(n for s, n in tally.items() if s != "cancelled"),
            pending_count=tally["pending"],
            processing_count=tally["processing"],
            completed_count=tally["completed"],
            failed_count=tally["failed"],
            cancelled_count=tally["cancelled"],
        )


def expected_project_status(statuses: Iterable[str]) -> str:
    """CONTRACT section 3, written independently of the SQL: over non-cancelled images, none or
    all pending -> pending; all completed -> completed; all completed or failed with at least
    one failed -> failed; otherwise processing."""
    live = [s for s in statuses if s != "cancelled"]
    if all(s == "pending" for s in live):
        return "pending"
    if all(s == "completed" for s in live):
        return "completed"
    if all(s in ("completed", "failed") for s in live) and "failed" in live:
        return "failed"
    return "processing"


async def fetch_dict(conn: Conn, query: LiteralString, params: Any = None) -> dict[str, Any]:
    """The single row a query returns, as a dict (fails when there is none)."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(query, params)
    row = await cur.fetchone()
    assert row is not None, f"no row for {query!r} {params!r}"
    return row


async def fetch_value(conn: Conn, query: LiteralString, params: Any = None) -> Any:
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    assert row is not None, f"no row for {query!r} {params!r}"
    return row[0]


async def update_generation(conn: Conn, generation_id: uuid.UUID, **columns: Any) -> None:
    query = sql.SQL("UPDATE image_generations SET {} WHERE id = {}").format(
        sql.SQL(", ").join(
            sql.SQL("{} = {}").format(sql.Identifier(name), sql.Placeholder(name))
            for name in columns
        ),
        sql.Placeholder("__id"),
    )
    cur = await conn.execute(query, {**columns, "__id": generation_id})
    assert cur.rowcount == 1, f"generation {generation_id} not found"


async def set_status(conn: Conn, generation_id: uuid.UUID, status: str) -> None:
    await update_generation(conn, generation_id, status=status)


async def walk_to(conn: Conn, generation_id: uuid.UUID, status: str) -> None:
    """Moves a pending generation to `status` along legal transitions."""
    for step in PATH_TO[status]:
        await set_status(conn, generation_id, step)


async def generation(conn: Conn, generation_id: uuid.UUID) -> dict[str, Any]:
    return await fetch_dict(conn, "SELECT * FROM image_generations WHERE id = %s", (generation_id,))


async def generation_status(conn: Conn, generation_id: uuid.UUID) -> str:
    return str(
        await fetch_value(
            conn, "SELECT status FROM image_generations WHERE id = %s", (generation_id,)
        )
    )


async def job(conn: Conn, job_id: int) -> dict[str, Any]:
    return await fetch_dict(conn, "SELECT * FROM procrastinate_jobs WHERE id = %s", (job_id,))


async def project_counters(conn: Conn, project_id: uuid.UUID) -> Counters:
    return Counters.from_row(
        await fetch_dict(conn, "SELECT * FROM projects WHERE id = %s", (project_id,))
    )


async def recomputed_counters(conn: Conn, project_id: uuid.UUID) -> Counters:
    """recompute_project_counts(project_id): the counters rebuilt from the rows."""
    return Counters.from_row(
        await fetch_dict(conn, "SELECT * FROM recompute_project_counts(%s)", (project_id,))
    )


async def counted_statuses(conn: Conn, project_id: uuid.UUID) -> list[str]:
    """Every generation's status in the project, from COUNT(*) ... GROUP BY status."""
    cur = await conn.execute(
        "SELECT status, count(*) FROM image_generations WHERE project_id = %s GROUP BY status",
        (project_id,),
    )
    return [str(status) for status, n in await cur.fetchall() for _ in range(int(n))]


async def assert_project_consistent(
    conn: Conn, project_id: uuid.UUID, statuses: Iterable[str] | None = None
) -> Counters:
    """The stored counters equal the contract's expectation for the rows (or for `statuses`
    when given), and recompute_project_counts agrees with them."""
    stored = await project_counters(conn, project_id)
    counted = await counted_statuses(conn, project_id)
    if statuses is not None:
        assert sorted(counted) == sorted(statuses)
    expected = Counters.expected(counted)
    assert stored == expected, f"stored {stored} != expected {expected}"
    assert await recomputed_counters(conn, project_id) == stored
    assert await project_counters(conn, project_id) == stored
    return stored


async def events(conn: Conn, generation_id: uuid.UUID) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT * FROM image_events WHERE generation_id = %s ORDER BY id", (generation_id,)
    )
    return await cur.fetchall()
