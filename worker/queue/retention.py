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

What each table keeps is said in docs/operations.md ("What is kept, and for how long").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from worker.core import store
from worker.core.config import Settings
from worker.core.store import Db, PruneTarget

logger = logging.getLogger(__name__)

DAY_S = 86_400.0
# Between two rounds of batches: room for the work itself.
PAUSE_S = 0.05


@dataclass(frozen=True)
class Retention:
    """One table's rows are kept for `days`."""

    target: PruneTarget
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
    ]
    return [retention for retention in declared if retention.days > 0]


@dataclass
class PruneRun:
    """What one run deleted, per table, and whether it finished (False: the time cap stopped
    it with rows still due)."""

    deleted: dict[str, int] = field(default_factory=dict)
    finished: bool = True
    batches: int = 0

    @property
    def total(self) -> int:
        return sum(self.deleted.values())


async def prune(
    db: Db,
    plan: list[Retention],
    *,
    batch_size: int,
    max_s: float,
    pause_s: float = PAUSE_S,
    clock: Callable[[], float] = time.monotonic,
) -> PruneRun:
    """Deletes what `plan` says is too old, a batch per table in turn, until every table's last
    batch was short or `max_s` has passed."""
    run = PruneRun(deleted={retention.target: 0 for retention in plan})
    started = clock()
    pending = list(plan)
    while pending:
        still = []
        for retention in pending:
            n = await store.prune_batch(db, retention.target, retention.older_than_s, batch_size)
            run.batches += 1
            run.deleted[retention.target] += n
            if n >= batch_size:
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
            "" if run.finished else ", stopped at the time cap with more due",
            ", ".join(f"{target} {n}" for target, n in run.deleted.items()),
            extra={"pruned": run.deleted, "finished": run.finished},
        )
    return run


async def due(db: Db, plan: list[Retention]) -> dict[str, int]:
    """How many rows of each table a run would delete now (`imagejobs prune --dry-run`)."""
    return {
        retention.target: await store.prune_due(db, retention.target, retention.older_than_s)
        for retention in plan
    }


async def prune_with_settings(db: Db, settings: Settings) -> PruneRun:
    return await prune(
        db,
        retentions(settings),
        batch_size=settings.prune_batch_size,
        max_s=settings.prune_max_s,
    )
