"""Retention (worker/queue/retention.py, imagejobs_prune in sql/migrations/024): each table's
rules, the batches, the time cap, the dry run, and a soak through a real worker process.

Pruning is database-wide, so these tests run on databases of their own, not the session's: they
neither delete other tests' rows nor count them."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from tests.e2e.conftest import stop
from tests.factories import create_project, insert_generation
from tests.sql.helpers import walk_to
from worker.core import store
from worker.core.config import ConfigError, load_settings
from worker.core.db import create_pool
from worker.core.migrate import migrate
from worker.devtools.embedded import with_database
from worker.queue import retention
from worker.queue.retention import DAY_S, Retention
from worker.storage.local import LocalStorage

ROOT = Path(__file__).resolve().parents[2]
OLD = "2 days"  # backdated rows
KEEP_S = DAY_S  # the retention the rule tests prune with: one day


@contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    name = f"imagejobs_retention_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = with_database(server_url, name)
    try:
        asyncio.run(migrate(url))
        yield url
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def own_url(server_url: str) -> Iterator[str]:
    with fresh_database(server_url) as url:
        yield url


@pytest.fixture
async def own_pool(own_url: str) -> AsyncIterator[AsyncConnectionPool]:
    async with create_pool(own_url, min_size=1, max_size=4, name="retention", autocommit=True) as p:
        yield p


async def scalar(pool: AsyncConnectionPool, sql: Any, params: Any = None) -> Any:
    async with pool.connection() as conn:
        cur = await conn.execute(sql, params)
        row = await cur.fetchone()
    assert row is not None
    return row[0]


async def ids(pool: AsyncConnectionPool, sql: Any, params: Any = None) -> set[Any]:
    async with pool.connection() as conn:
        cur = await conn.execute(sql, params)
        return {row[0] for row in await cur.fetchall()}


async def generation_in(
    pool: AsyncConnectionPool, project_id: uuid.UUID, status: str, logs: int = 0
) -> uuid.UUID:
    """A generation no worker runs (no job), with `logs` log events written on the way, moved
    to `status` by the triggers' own rules."""
    generation_id = await insert_generation(pool, project_id, job_id=-1)
    await log_events(pool, generation_id, logs)
    async with pool.connection() as conn:
        await walk_to(conn, generation_id, status)
    return generation_id


async def log_events(pool: AsyncConnectionPool, generation_id: uuid.UUID, n: int) -> None:
    for i in range(n):
        await store.log_event(pool, generation_id, "log", f"line {i}", {})


async def backdate_events(pool: AsyncConnectionPool, generation_id: uuid.UUID) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE image_events SET ts = ts - %s::interval WHERE generation_id = %s",
            (OLD, generation_id),
        )


async def event_kinds(pool: AsyncConnectionPool, generation_id: uuid.UUID) -> list[tuple[str, str]]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT kind, status FROM image_events WHERE generation_id = %s ORDER BY id",
            (generation_id,),
        )
        return [(str(kind), str(status)) for kind, status in await cur.fetchall()]


# --- the rules of each table -------------------------------------------------------------------


async def test_old_events_of_finished_generations_go_but_each_keeps_its_latest_state(
    own_pool: AsyncConnectionPool,
) -> None:
    project_id = await create_project(own_pool, uuid.uuid4())
    finished = {
        s: await generation_in(own_pool, project_id, s, logs=2) for s in ("completed", "failed")
    }
    cancelled = await generation_in(own_pool, project_id, "cancelled", logs=2)
    running = await generation_in(own_pool, project_id, "processing", logs=2)
    waiting = await generation_in(own_pool, project_id, "pending", logs=2)
    recent = await generation_in(own_pool, project_id, "completed", logs=2)
    for generation_id in (*finished.values(), cancelled, running, waiting):
        await backdate_events(own_pool, generation_id)
    before = {g: await event_kinds(own_pool, g) for g in (running, waiting, recent)}

    deleted = await store.prune_batch(own_pool, "image_events", KEEP_S, 1000)

    for status, generation_id in [*finished.items(), ("cancelled", cancelled)]:
        # Only the latest state event is left: the one its stream opens with.
        assert await event_kinds(own_pool, generation_id) == [("status", status)]
        latest = await store.latest_state_event(own_pool, generation_id)
        assert latest is not None and latest.status == status
    for generation_id, trail in before.items():
        assert await event_kinds(own_pool, generation_id) == trail  # unfinished or recent
    assert deleted > 0
    assert await store.prune_batch(own_pool, "image_events", KEEP_S, 1000) == 0


async def test_a_batch_deletes_at_most_batch_size_rows_and_the_run_loops_until_short(
    own_pool: AsyncConnectionPool,
) -> None:
    project_id = await create_project(own_pool, uuid.uuid4())
    generation_id = await generation_in(own_pool, project_id, "completed", logs=10)
    await backdate_events(own_pool, generation_id)
    due = await store.prune_due(own_pool, "image_events", KEEP_S)
    assert due >= 10  # the logs and the earlier state events; the last one stays

    assert await store.prune_batch(own_pool, "image_events", KEEP_S, 3) == 3
    assert await store.prune_due(own_pool, "image_events", KEEP_S) == due - 3

    plan = [Retention("image_events", 1.0)]
    run = await retention.prune(own_pool, plan, batch_size=3, max_s=60, pause_s=0)
    assert run.finished and run.deleted == {"image_events": due - 3}
    assert run.batches == (due - 3) // 3 + 1  # full batches, then a short one
    assert await event_kinds(own_pool, generation_id) == [("status", "completed")]


async def test_a_run_stops_at_its_time_cap_and_the_next_goes_on(
    own_pool: AsyncConnectionPool,
) -> None:
    project_id = await create_project(own_pool, uuid.uuid4())
    generation_id = await generation_in(own_pool, project_id, "failed", logs=6)
    await backdate_events(own_pool, generation_id)
    due = await store.prune_due(own_pool, "image_events", KEEP_S)
    plan = [Retention("image_events", 1.0)]

    first = await retention.prune(own_pool, plan, batch_size=2, max_s=0, pause_s=0)
    assert not first.finished and first.deleted == {"image_events": 2} and first.batches == 1
    second = await retention.prune(own_pool, plan, batch_size=2, max_s=60, pause_s=0)
    assert second.finished and second.deleted == {"image_events": due - 2}


async def defer_job(pool: AsyncConnectionPool, queue: str = "retention_test") -> int:
    job_id = await scalar(
        pool,
        "SELECT (procrastinate_defer_jobs_v1(ARRAY[ROW(%s, 'noop', 0, NULL, NULL, '{}'::jsonb,"
        " NULL)::procrastinate_job_to_defer_v1]))[1]",
        (queue,),
    )
    return int(job_id)


async def finish_job(pool: AsyncConnectionPool, job_id: int, status: str) -> None:
    async with pool.connection() as conn:
        if status in ("succeeded", "failed", "aborted"):
            await conn.execute(
                "UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %s", (job_id,)
            )
        if status != "doing":
            await conn.execute(
                "UPDATE procrastinate_jobs SET status = %s WHERE id = %s", (status, job_id)
            )


async def backdate_job(pool: AsyncConnectionPool, job_id: int) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE procrastinate_events SET at = at - %s::interval WHERE job_id = %s",
            (OLD, job_id),
        )


async def test_finished_jobs_go_with_their_events_and_live_ones_stay(
    own_pool: AsyncConnectionPool,
) -> None:
    project_id = await create_project(own_pool, uuid.uuid4())
    # Deferred two days ago (the ids follow deferral order, as they do in life).
    old: dict[str, int] = {}
    for status in ("succeeded", "failed", "cancelled", "aborted", "todo", "doing"):
        old[status] = await defer_job(own_pool)
        await finish_job(own_pool, old[status], status)
    held = await defer_job(own_pool)  # the job of a generation still processing
    await finish_job(own_pool, held, "succeeded")
    running = await generation_in(own_pool, project_id, "processing")
    async with own_pool.connection() as conn:
        await conn.execute(
            "UPDATE image_generations SET job_id = %s WHERE id = %s", (held, running)
        )
    for job_id in (*old.values(), held):
        await backdate_job(own_pool, job_id)
    # Deferred two days ago, finished just now; and a recent one.
    late = await defer_job(own_pool)
    await backdate_job(own_pool, late)
    await finish_job(own_pool, late, "succeeded")
    recent = await defer_job(own_pool)
    await finish_job(own_pool, recent, "succeeded")
    gone = {old[s] for s in ("succeeded", "failed", "cancelled", "aborted")}
    assert await store.prune_due(own_pool, "procrastinate_jobs", KEEP_S) == len(gone)

    assert await store.prune_batch(own_pool, "procrastinate_jobs", KEEP_S, 3) == 3
    assert await store.prune_batch(own_pool, "procrastinate_jobs", KEEP_S, 3) == 1
    assert await store.prune_batch(own_pool, "procrastinate_jobs", KEEP_S, 3) == 0

    left = await ids(own_pool, "SELECT id FROM procrastinate_jobs")
    assert left == {old["todo"], old["doing"], held, late, recent}
    with_events = await ids(own_pool, "SELECT DISTINCT job_id FROM procrastinate_events")
    assert with_events == left  # the pruned jobs' events went with them


async def test_webhook_rows_go_unless_recent_or_their_generation_is_unfinished(
    own_pool: AsyncConnectionPool,
) -> None:
    project_id = await create_project(own_pool, uuid.uuid4())
    done = await generation_in(own_pool, project_id, "completed")
    running = await generation_in(own_pool, project_id, "processing")
    for delivery_id, generation_id in [
        ("old-done", done),
        ("old-running", running),
        ("old-orphan", None),
        ("new-done", done),
    ]:
        await store.record_webhook_delivery(own_pool, delivery_id, "generic", generation_id, {})
    event_id = int(await scalar(own_pool, "SELECT max(id) FROM image_events"))
    for attempt in (1, 2):
        await store.record_webhook_attempt(
            own_pool,
            {
                "generation_id": done,
                "event_id": event_id,
                "message_id": f"msg_{attempt}",
                "type": "completed",
                "attempt": attempt,
                "status_code": 500,
                "error": "HTTP 500",
                "duration_ms": 3,
            },
        )
    async with own_pool.connection() as conn:
        await conn.execute(
            "UPDATE webhook_deliveries SET received_at = received_at - %s::interval"
            " WHERE id LIKE 'old-%%'",
            (OLD,),
        )
        await conn.execute(
            "UPDATE outgoing_webhook_attempts SET sent_at = sent_at - %s::interval"
            " WHERE attempt = 1",
            (OLD,),
        )

    assert await store.prune_batch(own_pool, "webhook_deliveries", KEEP_S, 1000) == 2
    assert await store.prune_batch(own_pool, "outgoing_webhook_attempts", KEEP_S, 1000) == 1
    deliveries = await ids(own_pool, "SELECT id FROM webhook_deliveries")
    assert deliveries == {"old-running", "new-done"}
    attempts = await ids(own_pool, "SELECT attempt FROM outgoing_webhook_attempts")
    assert attempts == {2}


async def test_a_dry_run_counts_and_deletes_nothing(own_pool: AsyncConnectionPool) -> None:
    project_id = await create_project(own_pool, uuid.uuid4())
    generation_id = await generation_in(own_pool, project_id, "completed", logs=4)
    await backdate_events(own_pool, generation_id)
    total = await scalar(own_pool, "SELECT count(*) FROM image_events")

    days = {
        "RETENTION_EVENTS_DAYS": "1",
        "RETENTION_JOBS_DAYS": "1",
        "RETENTION_WEBHOOKS_DAYS": "1",
    }
    plan = retention.retentions(load_settings(days))
    due = await retention.due(own_pool, plan)
    assert due["image_events"] == total - 1 and set(due) == {
        "image_events",
        "procrastinate_jobs",
        "webhook_deliveries",
        "outgoing_webhook_attempts",
    }
    assert await scalar(own_pool, "SELECT count(*) FROM image_events") == total


def test_the_cli_prunes_and_dry_runs(own_url: str) -> None:
    def prune(*flags: str) -> str:
        env = {**os.environ, "DATABASE_URL": own_url, "RETENTION_EVENTS_DAYS": "1"}
        done = subprocess.run(
            [sys.executable, "-m", "worker.cli", "prune", *flags],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout

    async def seed() -> None:
        async with create_pool(own_url, min_size=1, max_size=2, name="seed") as pool:
            project_id = await create_project(pool, uuid.uuid4())
            generation_id = await generation_in(pool, project_id, "completed", logs=3)
            await backdate_events(pool, generation_id)

    asyncio.run(seed())
    dry = prune("--dry-run")
    assert "WOULD DELETE" in dry and any(
        line.split()[:3] == ["image_events", "1", "5"] for line in dry.splitlines()
    ), dry
    done = prune()
    assert any(line.split()[:3] == ["image_events", "1", "5"] for line in done.splitlines()), done
    again = prune("--dry-run")
    assert any(line.split()[:3] == ["image_events", "1", "0"] for line in again.splitlines())


def test_retention_settings() -> None:
    settings = load_settings({})
    assert [(r.target, r.days) for r in retention.retentions(settings)] == [
        ("image_events", 30.0),
        ("procrastinate_jobs", 7.0),
        ("webhook_deliveries", 30.0),
        ("outgoing_webhook_attempts", 30.0),
    ]
    assert (settings.prune_cron, settings.prune_batch_size, settings.prune_max_s) == (
        "7 * * * *",
        1000,
        60.0,
    )
    kept = load_settings({"RETENTION_EVENTS_DAYS": "0", "RETENTION_WEBHOOKS_DAYS": "0.5"})
    assert [(r.target, r.older_than_s) for r in retention.retentions(kept)] == [
        ("procrastinate_jobs", 7 * DAY_S),
        ("webhook_deliveries", DAY_S / 2),
        ("outgoing_webhook_attempts", DAY_S / 2),
    ]
    for env in ({"RETENTION_JOBS_DAYS": "-1"}, {"PRUNE_BATCH_SIZE": "0"}):
        with pytest.raises(ConfigError):
            load_settings(env)


# --- the soak: a real worker, work in rounds, the tables flat ----------------------------------

SOAK_ROUNDS = 4
SOAK_PER_ROUND = 10
SOAK_KEEP_S = 1.0
SMALL = Jsonb({"base_prompt": "a lighthouse", "size": "64x64"})


class _Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def webhook_receiver() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


COUNTS = """
SELECT (SELECT count(*) FROM procrastinate_jobs),
       (SELECT count(*) FROM procrastinate_events),
       (SELECT count(*) FROM image_events) - (SELECT count(*) FROM image_generations),
       (SELECT count(*) FROM webhook_deliveries),
       (SELECT count(*) FROM outgoing_webhook_attempts),
       (SELECT count(*) FROM image_generations WHERE status IN ('pending', 'processing'))
"""
TABLES = (
    "procrastinate_jobs",
    "procrastinate_events",
    "image_events beyond one per generation",
    "webhook_deliveries",
    "outgoing_webhook_attempts",
)


def files(root: Path) -> int:
    return sum(1 for path in root.rglob("*") if path.is_file())


async def counts(pool: AsyncConnectionPool) -> dict[str, int]:
    async with pool.connection() as conn:
        cur = await conn.execute(COUNTS)
        row = await cur.fetchone()
    assert row is not None
    return dict(zip((*TABLES, "unfinished"), map(int, row), strict=True))


SEQUENCES = """
SELECT coalesce(pg_sequence_last_value('procrastinate_jobs_id_seq'), 0),
       coalesce(pg_sequence_last_value('procrastinate_events_id_seq'), 0),
       coalesce(pg_sequence_last_value('image_events_id_seq'), 0),
       coalesce(pg_sequence_last_value('outgoing_webhook_attempts_id_seq'), 0)
"""


async def made(pool: AsyncConnectionPool) -> dict[str, int]:
    """How many rows each table has ever had (its id sequence)."""
    async with pool.connection() as conn:
        cur = await conn.execute(SEQUENCES)
        row = await cur.fetchone()
    assert row is not None
    names = (
        "procrastinate_jobs",
        "procrastinate_events",
        "image_events",
        "outgoing_webhook_attempts",
    )
    return dict(zip(names, map(int, row), strict=True))


async def wait_for(pool: AsyncConnectionPool, sql: Any, params: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await scalar(pool, sql, params):
        assert time.monotonic() < deadline, f"timed out waiting for: {sql}"
        await asyncio.sleep(0.1)


@pytest.mark.timeout(90)
async def test_soak_the_tables_stay_flat_while_work_flows(
    own_url: str, own_pool: AsyncConnectionPool, tmp_path: Path
) -> None:
    """Generations with outgoing webhooks, and incoming deliveries, in rounds through a real
    worker whose `prune` task runs every second with every retention at one second, results'
    files included. Each round
    adds its work to every table; once it is pruned, the tables are back where they were, so
    after the last round they hold about what one round leaves, not what all of them made."""
    keep_days = str(SOAK_KEEP_S / DAY_S)
    env = {
        **os.environ,
        "DATABASE_URL": own_url,
        "LOCAL_STORAGE_DIR": str(tmp_path / "storage"),
        "PUBLIC_BASE_URL": "http://127.0.0.1:9",
        "LOCAL_PROVIDER_DELAY_MS": "0",
        "WORKER_CONCURRENCY": "8",
        "RETENTION_EVENTS_DAYS": keep_days,
        "RETENTION_JOBS_DAYS": keep_days,
        "RETENTION_WEBHOOKS_DAYS": keep_days,
        "RETENTION_RESULTS_DAYS": keep_days,
        "PRUNE_CRON": "* * * * * *",
        "PRUNE_BATCH_SIZE": "25",
        "LOG_LEVEL": "INFO",
        "LOG_FORMAT": "text",
    }
    log = tmp_path / "worker.log"
    # Several workspaces: the fair queue runs one workspace's generations in order.
    projects = [await create_project(own_pool, uuid.uuid4()) for _ in range(8)]
    with webhook_receiver() as hook, log.open("ab") as out:
        worker = await asyncio.to_thread(
            subprocess.Popen,
            [sys.executable, "-m", "worker.cli", "worker"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        try:
            settled: list[dict[str, int]] = []
            first_ids = await made(own_pool)
            for _ in range(SOAK_ROUNDS):
                round_ids = [
                    await insert_generation(
                        own_pool,
                        projects[i % len(projects)],
                        webhook_url=hook,
                        webhook_events_filter=["start", "completed"],
                        prompt_spec=SMALL,
                    )
                    for i in range(SOAK_PER_ROUND)
                ]
                await wait_for(
                    own_pool,
                    "SELECT count(*) = %s FROM image_generations"
                    " WHERE id = ANY(%s) AND status = 'completed'",
                    (len(round_ids), round_ids),
                    timeout=30,
                )
                for generation_id in round_ids:
                    await store.record_webhook_delivery(
                        own_pool, f"d-{generation_id}", "generic", generation_id, {}
                    )
                # Every outgoing webhook sent (start, completed; their attempts may be pruned already).
                await wait_for(
                    own_pool,
                    "SELECT count(*) = 0 FROM procrastinate_jobs"
                    " WHERE status IN ('todo', 'doing') AND task_name = 'deliver_webhook'",
                    None,
                    timeout=20,
                )
                # The round's rows are pruned within a few seconds of their retention.
                await wait_for(
                    own_pool,
                    "SELECT count(*) = 0 FROM webhook_deliveries WHERE id = ANY(%s)",
                    ([f"d-{g}" for g in round_ids],),
                    timeout=15,
                )
                await wait_for(
                    own_pool,
                    "SELECT count(*) = 0 FROM procrastinate_jobs"
                    " WHERE (args->>'generation_id')::uuid = ANY(%s)",
                    (round_ids,),
                    timeout=15,
                )
                await wait_for(
                    own_pool,
                    "SELECT count(*) = 0 FROM image_generations"
                    " WHERE id = ANY(%s) AND (result_key IS NOT NULL OR thumbnail_key IS NOT NULL)",
                    (round_ids,),
                    timeout=15,
                )
                settled.append(await counts(own_pool) | {"files": files(tmp_path / "storage")})
        finally:
            code = await asyncio.to_thread(stop, worker)
    produced = {table: n - first_ids[table] for table, n in (await made(own_pool)).items()}
    logs = log.read_text()
    assert code == 0, logs
    assert "pruned" in logs, logs

    # Flat: what is left after each round is about what a few seconds of work (the periodic
    # jobs and the last round's tail) leave, the same in the last round as in the first, and
    # far below what all the rounds made.
    first, last = settled[0], settled[-1]
    for table in TABLES:
        bound = max(first[table], 1) * 2 + 10
        assert all(s[table] <= bound for s in settled), (table, settled)
        assert last[table] <= bound, (table, settled)
    rows = SOAK_ROUNDS * SOAK_PER_ROUND
    assert produced["procrastinate_jobs"] >= rows * 2, produced  # generate, deliver_webhook
    assert produced["outgoing_webhook_attempts"] >= rows * 2, produced
    assert produced["image_events"] >= rows * 5, produced
    for table in ("procrastinate_jobs", "procrastinate_events", "outgoing_webhook_attempts"):
        assert last[table] * 3 < produced[table], (table, produced, settled)
    assert all(s["unfinished"] == 0 for s in settled)
    assert all(s["files"] == 0 for s in settled), settled  # results and thumbnails deleted
    # Every generation keeps its latest state event: the streams of old ones still open.
    kept = await scalar(
        own_pool,
        "SELECT count(*) FROM image_generations g WHERE EXISTS (SELECT 1 FROM image_events e"
        " WHERE e.generation_id = g.id AND e.kind = 'status' AND e.status = 'completed')",
    )
    assert kept == SOAK_ROUNDS * SOAK_PER_ROUND


# --- results (RETENTION_RESULTS_DAYS, off by default) ------------------------------------------


async def completed_with_files(
    pool: AsyncConnectionPool, storage: LocalStorage, project_id: uuid.UUID, *, old: bool
) -> tuple[uuid.UUID, list[str]]:
    generation_id = await generation_in(pool, project_id, "processing")
    keys = [f"w/p/{generation_id}.png", f"w/p/{generation_id}.thumb.webp"]
    urls = [await storage.put(key, b"not really an image", "image/png") for key in keys]
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE image_generations SET status = 'completed', result_key = %s,"
            " result_image_url = %s, thumbnail_key = %s, thumbnail_url = %s WHERE id = %s",
            (keys[0], urls[0], keys[1], urls[1], generation_id),
        )
        if old:
            await conn.execute(
                "UPDATE image_generations SET finished_at = finished_at - %s::interval"
                " WHERE id = %s",
                (OLD, generation_id),
            )
    return generation_id, keys


async def files_of(pool: AsyncConnectionPool, generation_id: uuid.UUID) -> tuple[Any, ...]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT status, result_key, result_image_url, thumbnail_key, thumbnail_url"
            " FROM image_generations WHERE id = %s",
            (generation_id,),
        )
        row = await cur.fetchone()
    assert row is not None
    return tuple(row)


class BrokenStorage(LocalStorage):
    async def delete(self, keys: Sequence[str]) -> None:
        raise OSError("storage is down")


async def test_old_results_lose_their_files_and_urls_and_the_rest_keep_theirs(
    own_pool: AsyncConnectionPool, tmp_path: Path
) -> None:
    storage = LocalStorage(tmp_path / "files", "http://files.test")
    project_id = await create_project(own_pool, uuid.uuid4())
    old = [await completed_with_files(own_pool, storage, project_id, old=True) for _ in range(3)]
    recent, recent_keys = await completed_with_files(own_pool, storage, project_id, old=False)
    running = await generation_in(own_pool, project_id, "processing")
    plan = [Retention("results", 1.0)]
    assert await retention.due(own_pool, plan) == {"results": 3}

    # Storage down: nothing changes, the other tables go on, the next run does it.
    broken = BrokenStorage(tmp_path / "files", "http://files.test")
    both = [*plan, Retention("image_events", 1.0)]
    failed = await retention.prune(own_pool, both, batch_size=10, max_s=60, storage=broken)
    assert failed.failed == ["results"] and not failed.finished
    assert failed.deleted["results"] == 0 and failed.batches == 1  # image_events
    assert await retention.due(own_pool, plan) == {"results": 3}

    run = await retention.prune(own_pool, plan, batch_size=2, max_s=60, storage=storage)
    assert run.finished and run.deleted == {"results": 3} and run.batches == 2
    for generation_id, keys in old:
        assert await files_of(own_pool, generation_id) == ("completed", None, None, None, None)
        assert not any(storage.path_for(key).exists() for key in keys)
    status, result_key, result_url, *_ = await files_of(own_pool, recent)
    assert (status, result_key) == ("completed", recent_keys[0]) and result_url
    assert all(storage.path_for(key).exists() for key in recent_keys)
    assert (await files_of(own_pool, running))[0] == "processing"
    assert await retention.due(own_pool, plan) == {"results": 0}


def test_results_are_kept_forever_by_default() -> None:
    assert "results" not in {r.target for r in retention.retentions(load_settings({}))}
    kept = load_settings({"RETENTION_RESULTS_DAYS": "90"})
    assert ("results", 90.0) in [(r.target, r.days) for r in retention.retentions(kept)]
