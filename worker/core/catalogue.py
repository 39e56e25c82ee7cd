"""The model catalogue (the `models` table, sql/015) as the Python side reads and changes it.

The database is the one source of truth: defaults for API and SQL inserts alike, shut-down models
refused by the insert trigger. This module lists it, changes a default, and answers the few
questions the API and the worker ask of it (is this model deprecated, what replaces it).
"""

from __future__ import annotations

import time
from datetime import date
from typing import Literal

import msgspec
import psycopg
from psycopg_pool import AsyncConnectionPool

from worker.core.store import (
    Db,
    connection,
    execute,
    fetch_all,
    fetch_one,
    fetch_rows,
    transaction,
)

ModelStatus = Literal["active", "deprecated", "shutdown"]

# Names users ask for that we deliberately do not offer, with the reason they are told.
REFUSED_PROVIDERS: dict[str, str] = {
    "midjourney": "Midjourney has no official public API: it cannot be offered as a provider "
    "(see docs/providers.md)",
}


class ModelEntry(msgspec.Struct, kw_only=True):
    provider: str
    model: str
    status: ModelStatus
    deprecated_on: date | None
    shutdown_date: date | None
    replacement: str | None
    capabilities: list[str]
    is_default: bool = msgspec.field(name="default")
    source: str


async def list_models(db: Db) -> list[ModelEntry]:
    return await fetch_all(db, "list_models", ModelEntry, {})


class ShutDownDefault(ValueError):
    """A shut-down model cannot be a provider's default."""


async def set_default(db: Db, provider: str, model: str, *, source: str) -> ModelEntry:
    params = {"provider": provider, "model": model, "source": source}
    try:
        async with transaction(db) as conn:
            await execute(conn, "clear_default_model", params)
            entry = await fetch_one(conn, "set_default_model", ModelEntry, params)
    except psycopg.errors.ForeignKeyViolation as exc:
        raise ValueError(f"unknown provider {provider!r}") from exc
    except psycopg.errors.CheckViolation as exc:
        raise ShutDownDefault(f"{provider} {model} is shut down and cannot be a default") from exc
    assert entry is not None
    return entry


class Catalogue:
    """The catalogue cached for `ttl_s`: it changes a few times a year, and is read on every
    creation (the Deprecation header) and every model_unavailable failure."""

    def __init__(self, pool: AsyncConnectionPool, ttl_s: float = 30.0) -> None:
        self.pool = pool
        self.ttl_s = ttl_s
        self._entries: dict[tuple[str, str], ModelEntry] = {}
        self._providers: tuple[str, ...] = ()
        self._loaded_at = float("-inf")

    async def _fresh(self) -> dict[tuple[str, str], ModelEntry]:
        if time.monotonic() - self._loaded_at > self.ttl_s:
            async with connection(self.pool) as conn:
                entries = await list_models(conn)
                self._providers = tuple(str(r[0]) for r in await fetch_rows(conn, "list_providers"))
            self._entries = {(e.provider, e.model): e for e in entries}
            self._loaded_at = time.monotonic()
        return self._entries

    async def providers(self) -> tuple[str, ...]:
        """The providers a generation may name (the `providers` table)."""
        await self._fresh()
        return self._providers

    async def entry(self, provider: str, model: str) -> ModelEntry | None:
        return (await self._fresh()).get((provider, model))

    async def instead_of(self, provider: str, model: str) -> str | None:
        """What to use instead of `model`: its replacement, else the provider's default."""
        entries = await self._fresh()
        known = entries.get((provider, model))
        if known is not None and known.replacement:
            return known.replacement
        default = next(
            (e.model for e in entries.values() if e.provider == provider and e.is_default), None
        )
        return default if default != model else None


# A default that shuts down within this many days is announced at every worker start.
WARN_DAYS = 90


async def default_model_warnings(db: Db) -> list[str]:
    """One line for each provider default that is deprecated or shuts down within WARN_DAYS."""
    warnings = []
    for provider, model, status, shutdown_date, days in await fetch_rows(
        db, "metrics_model_shutdowns"
    ):
        if status == "active" and (days is None or days > WARN_DAYS):
            continue
        when = f"shuts down on {shutdown_date} ({days} days)" if shutdown_date else status
        warnings.append(
            f"the default {provider} model {model} {when}: change it with "
            f"`imagejobs models default {provider} MODEL`"
        )
    return warnings
