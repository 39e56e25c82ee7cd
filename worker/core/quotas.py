"""Per-workspace quotas (the `workspace_limits` table, sql/018) as the Python side reads and sets
them.

The database enforces them: the insert trigger refuses a generation over a limit with SQLSTATE
`IJ429`, for the API and plain SQL alike. This module reads a workspace's use of the current
window (the UTC day), sets limits (`imagejobs quota set`) and recognises the trigger's refusal.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Literal
from uuid import UUID

import msgspec
import psycopg

from worker.core.store import Db, fetch_dicts, fetch_one

# The insert trigger's SQLSTATE (class IJ is ours, not PostgreSQL's) and its constraint names.
QUOTA_SQLSTATE = "IJ429"
LimitName = Literal["generations_per_day", "usd_per_day"]
QUOTA_CONSTRAINTS: dict[str, LimitName] = {
    "workspace_limits_generations_per_day": "generations_per_day",
    "workspace_limits_usd_per_day": "usd_per_day",
}


class WorkspaceLimits(msgspec.Struct, kw_only=True):
    """A workspace's limits; null is unlimited."""

    generations_per_day: int | None = None
    usd_per_day: float | None = None
    max_concurrency: int | None = None


class StoredLimits(msgspec.Struct, kw_only=True):
    workspace_id: UUID
    generations_per_day: int | None
    usd_per_day: float | None
    max_concurrency: int | None
    updated_at: datetime


class UsageWindow(msgspec.Struct):
    """[start, end): the UTC day; the quotas reset at `end`."""

    start: datetime
    end: datetime


class Usage(msgspec.Struct, kw_only=True):
    workspace_id: UUID
    window: UsageWindow
    # Generations created in the window, any status.
    generations: int
    # Estimated list price of the window's pending, processing and completed generations.
    estimated_usd: float
    limits: WorkspaceLimits


def quota_limit(exc: psycopg.Error) -> LimitName | None:
    """Which limit the insert trigger refused a generation for, or None for any other error."""
    if exc.sqlstate != QUOTA_SQLSTATE:
        return None
    return QUOTA_CONSTRAINTS.get(exc.diag.constraint_name or "", "generations_per_day")


async def workspace_usage(db: Db, workspace_id: UUID) -> Usage:
    rows = await fetch_dicts(db, "workspace_usage", {"workspace_id": workspace_id})
    row = rows[0]
    return Usage(
        workspace_id=workspace_id,
        window=UsageWindow(start=row["window_start"], end=row["window_end"]),
        generations=int(row["generations"]),
        estimated_usd=float(row["estimated_usd"]),
        limits=WorkspaceLimits(
            generations_per_day=row["generations_per_day"],
            usd_per_day=row["usd_per_day"],
            max_concurrency=row["max_concurrency"],
        ),
    )


async def get_limits(db: Db, workspace_id: UUID) -> StoredLimits | None:
    return await fetch_one(db, "get_workspace_limits", StoredLimits, {"workspace_id": workspace_id})


class _Unset(enum.Enum):
    UNSET = "unset"


# `quota set` leaves a limit it was not given as it is; UNSET says "not given".
UNSET = _Unset.UNSET


async def set_limits(
    db: Db,
    workspace_id: UUID,
    *,
    generations_per_day: int | _Unset | None = UNSET,
    usd_per_day: float | _Unset | None = UNSET,
    max_concurrency: int | _Unset | None = UNSET,
) -> StoredLimits:
    """Sets the limits given (None clears one: unlimited); the others stay as they are."""
    values = {
        "generations_per_day": generations_per_day,
        "usd_per_day": usd_per_day,
        "max_concurrency": max_concurrency,
    }
    params: dict[str, object] = {"workspace_id": workspace_id}
    for name, value in values.items():
        params[f"set_{name}"] = value is not UNSET
        params[name] = None if value is UNSET else value
    try:
        stored = await fetch_one(db, "set_workspace_limits", StoredLimits, params)
    except psycopg.errors.CheckViolation as exc:
        column = (exc.diag.constraint_name or "").removeprefix("workspace_limits_")
        column = column.removesuffix("_check")
        bound = "greater than 0" if column == "max_concurrency" else "0 or more"
        raise ValueError(f"{column or 'limit'} must be {bound} (or none)") from exc
    except psycopg.errors.NumericValueOutOfRange as exc:
        raise ValueError("usd_per_day must be below 1000000, with at most 6 decimals") from exc
    assert stored is not None
    return stored


__all__ = [
    "QUOTA_SQLSTATE",
    "UNSET",
    "LimitName",
    "StoredLimits",
    "Usage",
    "UsageWindow",
    "WorkspaceLimits",
    "get_limits",
    "quota_limit",
    "set_limits",
    "workspace_usage",
]
