"""Retention: how long the tables that grow with the work keep their rows, and the pruner that
holds them to it.

Each table has a retention in days (worker/core/config.py, `RETENTION_*_DAYS`; 0 keeps its rows
forever). A run (`prune`, from the periodic task `prune` on PRUNE_CRON, or `imagejobs prune`)
deletes what is older, in batches of PRUNE_BATCH_SIZE rows: each batch is one short statement
(`imagejobs_prune`, sql/migrations/024_retention.sql) that takes only the rows it deletes and
skips those another transaction holds. The tables take turns, one batch each, with a short
pause between rounds so the pruner never hogs the database; a table is done when a batch comes
back short, and the run stops when every table is done or after PRUNE_MAX_S (the next run goes
on from there). Plain deletes: no table is rewritten or locked, autovacuum reuses the space.

Results (RETENTION_RESULTS_DAYS, off by default) take their turn too: a batch of finished
generations older than that, locked (SKIP LOCKED) for one transaction in which their files are
deleted from storage (one call; a key already gone is no error) and then their keys and URLs
cleared. A failed delete rolls back and leaves the rows for the next run (the other tables go
on); a crash between the
delete and the commit only means the next run deletes the same keys again, as nothing.

What each table keeps is said in docs/operations.md ("What is kept, and for how long").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Literal

from worker.core import store
from worker.core.config import Settings
from worker.core.store import Db, PruneTarget
from worker.storage.base import Storage

logger = logging.getLogger(__name__)

DAY_S = 86_400.0
# Between two rounds of batches: room for the work itself.
PAUSE_S = 0.05
# Results go a few at a time: each generation has up to three files, deleted in one call.
RESULTS_BATCH = 100
RESULTS: Final = "results"


@dataclass(frozen=True)
class Retention:
    """One table's rows are kept for `days`."""

    target: PruneTarget | Literal["results"]
    days: float

    @property
    def older_than_s(self) -> float:
        return self.days * DAY_S


def retentions(settings: Settings) -> list[Retention]:
    """The tables to prune and for how long each keeps its rows (those kept forever left out)."""
    declared = [
        Retention("image_events", settings.retention_events_days),
        Retention("procrastinate_jobs", settings.retention_jobs_days),
        Retention("webhook_deliveries", settings.retention_webhooks_days),
        Retention("outgoing_webhook_attempts", settings.retention_webhooks_days),
        Retention(RESULTS, settings.retention_results_days),
    ]
    return [retention for retention in declared if retention.days > 0]


@dataclass
class PruneRun:
    """What one run deleted, per table, and whether it finished (False: the time cap stopped
    it with rows still due, or a table failed: results when storage is down)."""

    deleted: dict[str, int] = field(default_factory=dict)
    finished: bool = True
    batches: int = 0
    failed: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.deleted.values())


async def prune(
    db: Db,
    plan: list[Retention],
    *,
    batch_size: int,
    max_s: float,
    storage: Storage | None = None,
    pause_s: float = PAUSE_S,
    clock: Callable[[], float] = time.monotonic,
) -> PruneRun:
    """Deletes what `plan` says is too old, a batch per table in turn, until every table's last
    batch was short or `max_s` has passed. Results need the `storage` their files are in."""
    if storage is None:
        plan = [retention for retention in plan if retention.target != RESULTS]
    run = PruneRun(deleted={retention.target: 0 for retention in plan})
    started = clock()
    pending = list(plan)
    while pending:
        still = []
        for retention in pending:
            if retention.target == RESULTS:
                assert storage is not None
                size = min(batch_size, RESULTS_BATCH)
                try:
                    n = await prune_results(db, storage, retention.older_than_s, size)
                except OSError as exc:
                    # Storage is down: the other tables go on, results wait for the next run.
                    logger.warning("results not pruned: %s", exc)
                    run.failed.append(RESULTS)
                    run.finished = False
                    continue
            else:
                size = batch_size
                n = await store.prune_batch(db, retention.target, retention.older_than_s, size)
            run.batches += 1
            run.deleted[retention.target] += n
            if n >= size:
                still.append(retention)
        pending = still
        if pending and clock() - started >= max_s:
            run.finished = False
            break
        if pending:
            await asyncio.sleep(pause_s)
    if run.total or not run.finished:
        logger.info(
            "pruned %d row(s) in %d batch(es)%s: %s",
            run.total,
            run.batches,
            "" if run.finished else ", stopped with more due",
            ", ".join(f"{target} {n}" for target, n in run.deleted.items()),
            extra={"pruned": run.deleted, "finished": run.finished},
        )
    return run


async def prune_results(db: Db, storage: Storage, older_than_s: float, limit: int) -> int:
    """One batch of results: at most `limit` generations' files deleted and forgotten; how
    many generations. A storage failure raises, with nothing changed."""
    async with store.transaction(db) as conn:
        expiring = await store.expiring_results(conn, older_than_s, limit)
        if not expiring:
            return 0
        await storage.delete([key for _, keys in expiring for key in keys])
        await store.forget_results(conn, [generation_id for generation_id, _ in expiring])
    return len(expiring)


async def due(db: Db, plan: list[Retention]) -> dict[str, int]:
    """How many rows of each table a run would delete now (`imagejobs prune --dry-run`; for
    results, how many generations would lose their files)."""
    counts: dict[str, int] = {}
    for retention in plan:
        if retention.target == RESULTS:
            counts[RESULTS] = await store.expiring_results_due(db, retention.older_than_s)
        else:
            counts[retention.target] = await store.prune_due(
                db, retention.target, retention.older_than_s
            )
    return counts


async def prune_with_settings(db: Db, settings: Settings, storage: Storage) -> PruneRun:
    return await prune(
        db,
        retentions(settings),
        batch_size=settings.prune_batch_size,
        max_s=settings.prune_max_s,
        storage=storage,
    )
