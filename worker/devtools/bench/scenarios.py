"""The benchmark scenarios. Each returns a Result with its reference, measured in the same run."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from psycopg import sql
from standardwebhooks import Webhook

from worker.devtools.bench.harness import (
    WORKER_COMMAND,
    Bench,
    Result,
    backend_cpu_ms,
    median,
    percentile,
    rss_mb,
)
from worker.devtools.bench.noop import QUEUE as NOOP_QUEUE
from worker.queue.presence import NAMESPACE as PRESENCE_NAMESPACE

SMALL_IMAGE = '{"size": "64x64"}'


async def _count(bench: Bench, sql: str, params: tuple[Any, ...] = ()) -> int:
    async with await bench.connect() as conn:
        cur = await conn.execute(sql.encode(), params)
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def _workers_registered(bench: Bench) -> int:
    return await _count(bench, "SELECT count(*) FROM procrastinate_workers")


async def _start_and_wait(bench: Bench, command: list[str], **env: str) -> Any:
    before = await _workers_registered(bench)
    process = bench.start(command, **env)

    async def registered() -> bool:
        return await _workers_registered(bench) > before

    await bench.wait_for(registered, 60)
    return process


async def reference_drain(bench: Bench, jobs: int, concurrency: int) -> float:
    """procrastinate alone: defer `jobs` no-op jobs in one statement, drain them; jobs/s."""
    command = [
        sys.executable,
        "-m",
        "procrastinate",
        "--app=worker.devtools.bench.noop.app",
        "worker",
    ]
    command += ["--queues", NOOP_QUEUE, "--concurrency", str(concurrency)]
    worker = await _start_and_wait(bench, command)
    await asyncio.sleep(0.5)
    done_before = await _count(
        bench,
        "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'bench_noop' AND status = 'succeeded'",
    )
    async with await bench.connect() as conn:
        await conn.execute(
            "SELECT procrastinate_defer_jobs_v1(array_agg(ROW(%s, 'bench_noop', 0, NULL, NULL, '{}'::jsonb, NULL)"
            "::procrastinate_job_to_defer_v1)) FROM generate_series(1, %s)",
            (NOOP_QUEUE, jobs),
        )
    started = time.perf_counter()

    async def drained() -> bool:
        done = await _count(
            bench,
            "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'bench_noop' AND status = 'succeeded'",
        )
        return done - done_before >= jobs

    await bench.wait_for(drained, 300)
    elapsed = time.perf_counter() - started
    bench.stop(worker)
    return jobs / elapsed


async def _insert_generations(bench: Bench, project_id: uuid.UUID, count: int) -> None:
    async with await bench.connect() as conn:
        await conn.execute(
            "INSERT INTO image_generations (project_id, prompt, prompt_spec) "
            "SELECT %s, 'bench ' || i, %s::jsonb FROM generate_series(1, %s) AS i",
            (project_id, SMALL_IMAGE, count),
        )


async def _drain_generations(
    bench: Bench, project_id: uuid.UUID, count: int, timeout: float = 600
) -> float:
    started = time.perf_counter()
    await _insert_generations(bench, project_id, count)

    async def completed() -> bool:
        return (
            await _count(bench, "SELECT completed_count FROM projects WHERE id = %s", (project_id,))
            >= count
        )

    await bench.wait_for(completed, timeout)
    return time.perf_counter() - started


async def _projects(bench: Bench, count: int) -> list[uuid.UUID]:
    """`count` projects of one fresh workspace."""
    workspace, _, project_id = await bench.tenant()
    project_ids = [project_id]
    async with await bench.connect() as conn:
        for _ in range(count - 1):
            cur = await conn.execute(
                "INSERT INTO projects (workspace_id, name) VALUES (%s, 'bench') RETURNING id",
                (workspace,),
            )
            row = await cur.fetchone()
            assert row is not None
            project_ids.append(row[0])
    return project_ids


async def _insert_spread(conn: Any, project_ids: list[uuid.UUID], count: int) -> None:
    """`count` generations in one statement, dealt out over the projects in turn."""
    await conn.execute(
        "INSERT INTO image_generations (project_id, prompt, prompt_spec) "
        "SELECT (%s::uuid[])[1 + i %% %s], 'bench ' || i, %s::jsonb"
        " FROM generate_series(1, %s) AS i",
        (project_ids, len(project_ids), SMALL_IMAGE, count),
    )


def _completed(
    bench: Bench, project_ids: list[uuid.UUID], count: int
) -> Callable[[], Awaitable[bool]]:
    async def completed() -> bool:
        done = await _count(
            bench,
            "SELECT coalesce(sum(completed_count), 0) FROM projects WHERE id = ANY(%s)",
            (project_ids,),
        )
        return done >= count

    return completed


async def worker_throughput(bench: Bench, jobs: int, concurrency: int, projects: int = 1) -> Result:
    """`projects` > 1 spreads the generations over that many projects of one workspace: every
    status change updates its project's counter row, so this tells what the one row costs."""
    reference = await reference_drain(bench, jobs, concurrency)
    project_ids = await _projects(bench, projects)
    worker = await _start_and_wait(
        bench, [sys.executable, "-m", "worker.cli", "worker"], WORKER_CONCURRENCY=str(concurrency)
    )
    await asyncio.sleep(0.5)
    started = time.perf_counter()
    async with await bench.connect() as conn:
        await _insert_spread(conn, project_ids, jobs)
    await bench.wait_for(_completed(bench, project_ids, jobs), 600)
    elapsed = time.perf_counter() - started
    bench.stop(worker)
    rate = jobs / elapsed
    spread = f", {projects} projects" if projects > 1 else ""
    return Result(
        scenario=f"worker throughput, concurrency {concurrency}{spread}",
        figure=round(rate, 1),
        unit="generations/s",
        reference=round(reference, 1),
        reference_name="procrastinate no-op jobs/s",
        ratio=round(rate / reference, 2),
        target=">= 1.0x",
        details={"jobs": jobs, "steps_per_generation": 5, "image": "64x64 local"},
    )


async def pickup_latency(bench: Bench, samples: int) -> Result:
    _, _, project_id = await bench.tenant()
    worker = await _start_and_wait(
        bench, [sys.executable, "-m", "worker.cli", "worker"], WORKER_CONCURRENCY="10"
    )
    await asyncio.sleep(0.5)
    latencies: list[float] = []
    async with await bench.connect() as listener, await bench.connect() as writer:
        await listener.execute("LISTEN image_generation_events")
        for i in range(samples):
            cur = await writer.execute(
                "INSERT INTO image_generations (project_id, prompt, prompt_spec) VALUES (%s, %s, %s::jsonb) RETURNING id",
                (project_id, f"pickup {i}", SMALL_IMAGE),
            )
            committed = time.perf_counter()
            row = await cur.fetchone()
            assert row is not None
            wanted = str(row[0])
            picked = None
            notifies = listener.notifies(timeout=30)
            try:
                async for notify in notifies:
                    payload = json.loads(notify.payload)
                    if payload["generation_id"] != wanted:
                        continue
                    if picked is None and payload["status"] == "processing":
                        picked = time.perf_counter()
                        latencies.append((picked - committed) * 1000)
                    if payload["status"] == "completed":
                        break
            finally:
                await notifies.aclose()
            await asyncio.sleep(0.02)
    bench.stop(worker)
    return Result(
        scenario="pickup latency (create -> processing event)",
        figure=round(percentile(latencies, 50), 2),
        unit="ms p50",
        target="p50 <= 10 ms, p99 <= 50 ms",
        details={"p99_ms": round(percentile(latencies, 99), 2), "samples": samples},
    )


def _cpu_s(pid: int) -> float:
    import psutil

    cpu = psutil.Process(pid).cpu_times()
    return float(cpu.user + cpu.system)


async def sse_fanout(bench: Bench, clients: int, updates: int, drivers: int = 2) -> Result:
    """`clients` streams of one generation from one API process, read by `drivers` processes of
    raw sockets (worker/devtools/bench/sse_reader.py), so the driver is not what is measured:
    commit of a progress update -> its arrival at each client."""
    api = await bench.start_api()
    api_process = bench.processes[-1]
    _, key, project_id = await bench.tenant()
    async with await bench.connect() as conn:
        cur = await conn.execute(
            "INSERT INTO image_generations (project_id, prompt, job_id) VALUES (%s, 'fan-out', -1) RETURNING id",
            (project_id,),
        )
        row = await cur.fetchone()
        assert row is not None
        generation_id = row[0]
        await conn.execute(
            "UPDATE image_generations SET status = 'processing', step = 'processing', progress = 50 WHERE id = %s",
            (generation_id,),
        )
    drivers = max(1, min(drivers, clients))
    shares = [clients // drivers + (1 if n < clients % drivers else 0) for n in range(drivers)]
    readers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "worker.devtools.bench.sse_reader",
            f"{api}/v1/generations/{generation_id}/events",
            "--key",
            key,
            "--clients",
            str(share),
            "--last",
            str(50 + updates),
            stdout=asyncio.subprocess.PIPE,
        )
        for share in shares
    ]
    try:
        for reader in readers:
            assert reader.stdout is not None
            line = await asyncio.wait_for(reader.stdout.readline(), 120)
            if line.strip() != b"ready":
                raise RuntimeError("an SSE reader did not open its streams")
        commits: dict[int, float] = {}
        # Who is busy while the updates fan out: the API, and the readers (each reports its own).
        api_cpu_before = _cpu_s(api_process.pid)
        window_started = time.perf_counter()
        async with await bench.connect() as conn:
            for progress in range(51, 51 + updates):
                await conn.execute(
                    "UPDATE image_generations SET progress = %s WHERE id = %s",
                    (progress, generation_id),
                )
                commits[progress] = time.perf_counter()
                await asyncio.sleep(0.05)
        reports = []
        for reader in readers:
            assert reader.stdout is not None
            reports.append(json.loads(await asyncio.wait_for(reader.stdout.read(), 300)))
        window = time.perf_counter() - window_started
    finally:
        for reader in readers:
            if reader.returncode is None:
                reader.kill()
            await reader.wait()
    api_busy = (_cpu_s(api_process.pid) - api_cpu_before) / window * 100
    latencies = [
        (t - commits[int(p)]) * 1000
        for report in reports
        for p, times in report["times"].items()
        for t in times
    ]
    listen = await _count(
        bench, "SELECT count(*) FROM pg_stat_activity WHERE query = 'LISTEN project_status'"
    )
    memory = rss_mb(api_process.pid)
    bench.stop(api_process)
    return Result(
        scenario=f"SSE fan-out, {clients} clients",
        figure=round(percentile(latencies, 50), 2),
        unit="ms p50",
        target="p50 <= 5 ms, p99 <= 100 ms",
        details={
            "p99_ms": round(percentile(latencies, 99), 2),
            "deliveries": len(latencies),
            "expected_deliveries": clients * updates,
            "listen_connections": listen,
            "api_rss_mb": round(memory, 1),
            "api_cpu_pct": round(api_busy),
            "reader_processes": drivers,
            "reader_cpu_pct": round(sum(r["cpu_s"] for r in reports) / window * 100),
        },
    )


async def create_throughput(bench: Bench, requests: int, concurrency: int) -> Result:
    from psycopg_pool import AsyncConnectionPool

    from worker.devtools.bench import noop

    pool = AsyncConnectionPool(bench.url, min_size=concurrency, max_size=concurrency, open=False)
    async with pool, noop.app.open_async(pool):

        async def deferrer(count: int) -> None:
            for _ in range(count):
                await noop.noop.defer_async()

        await deferrer(5)
        started = time.perf_counter()
        await asyncio.gather(*(deferrer(requests // concurrency) for _ in range(concurrency)))
        reference = (requests // concurrency * concurrency) / (time.perf_counter() - started)

    api = await bench.start_api()
    _, key, project_id = await bench.tenant()
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=api, headers={"Authorization": f"Bearer {key}"}, limits=limits, timeout=60
    ) as http:
        body = {"project_id": str(project_id), "prompt": "bench", "provider": "local"}

        async def poster(count: int) -> None:
            for _ in range(count):
                sent = time.perf_counter()
                response = await http.post("/v1/generations", json=body)
                assert response.status_code == 201, response.text
                latencies.append((time.perf_counter() - sent) * 1000)

        await poster(5)  # warm the connections
        latencies.clear()
        started = time.perf_counter()
        await asyncio.gather(*(poster(requests // concurrency) for _ in range(concurrency)))
        rate = len(latencies) / (time.perf_counter() - started)
    bench.stop(bench.processes[-1])
    # The 400 generations created are full-size `local` ones: left queued, the next worker
    # (the memory scenario's) rendered them all, which took it minutes instead of seconds.
    await _withdraw(bench, project_id)
    return Result(
        scenario=f"create throughput, {concurrency} clients",
        figure=round(rate, 1),
        unit="creations/s",
        reference=round(reference, 1),
        reference_name="procrastinate defer_async/s",
        ratio=round(rate / reference, 2),
        target=">= 1.0x",
        details={"p99_ms": round(percentile(latencies, 99), 2), "requests": len(latencies)},
    )


async def webhook_handler(bench: Bench, deliveries: int, concurrency: int) -> Result:
    """`concurrency` senders of signed deliveries that are accepted. The first ones after the API
    started (route and statement preparation, first connections: 20-40 ms each) are a warm-up,
    reported apart, not in the percentiles."""
    warmup = 50
    secret = "whsec_" + base64.b64encode(b"bench-webhook-secret").decode()
    api = await bench.start_api(WEBHOOK_SECRET=secret)
    _, _, project_id = await bench.tenant()
    async with await bench.connect() as conn:
        await conn.execute(
            "INSERT INTO image_generations (project_id, prompt, job_id, provider_job_id) "
            "SELECT %s, 'hook', -1, 'bench-job-' || i FROM generate_series(1, %s) AS i",
            (project_id, deliveries + warmup),
        )
        await conn.execute(
            "UPDATE image_generations SET status = 'processing' WHERE project_id = %s",
            (project_id,),
        )
    signer = Webhook(secret)
    latencies: list[float] = []

    def signed(i: int) -> tuple[bytes, dict[str, str]]:
        body = json.dumps(
            {
                "type": "image.generation.status",
                "data": {
                    "job_id": f"bench-job-{i}",
                    "status": "completed",
                    "images": [{"url": "https://cdn.example.com/x.png"}],
                },
            }
        )
        now = datetime.now(UTC)
        msg_id = f"msg_{uuid.uuid4().hex}"
        headers = {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "content-type": "application/json",
        }
        headers["webhook-signature"] = signer.sign(msg_id, now, body)
        return body.encode(), headers

    async with httpx.AsyncClient(
        base_url=api, timeout=60, limits=httpx.Limits(max_connections=concurrency)
    ) as http:

        async def send_all(queue: list[int], into: list[float]) -> None:
            async def sender() -> None:
                while queue:
                    body, headers = signed(queue.pop())
                    sent = time.perf_counter()
                    response = await http.post(
                        "/v1/webhooks/generic", content=body, headers=headers
                    )
                    assert response.status_code == 202, response.text
                    into.append((time.perf_counter() - sent) * 1000)

            await asyncio.gather(*(sender() for _ in range(concurrency)))

        cold: list[float] = []
        await send_all(list(range(deliveries + 1, deliveries + warmup + 1)), cold)
        started = time.perf_counter()
        await send_all(list(range(1, deliveries + 1)), latencies)
        rate = len(latencies) / (time.perf_counter() - started)
    bench.stop(bench.processes[-1])
    # Each accepted delivery deferred a job that downloads its (unreachable) image URL: left
    # queued, they kept the memory scenario's worker busy with download timeouts for minutes.
    await _withdraw(bench, project_id)
    return Result(
        scenario=f"webhook handler, {concurrency} senders",
        figure=round(percentile(latencies, 99), 2),
        unit="ms p99",
        target="p99 <= 20 ms",
        details={
            "deliveries_per_s": round(rate, 1),
            "p50_ms": round(percentile(latencies, 50), 2),
            "deliveries": len(latencies),
            "warmup_deliveries": len(cold),
            "warmup_max_ms": round(max(cold), 2),
        },
    )


async def _withdraw(bench: Bench, project_id: uuid.UUID) -> None:
    """Cancels a project's unfinished generations and removes their jobs, so that a scenario's
    leftovers (a backlog, a capped run) do not become the next scenario's load."""
    async with await bench.connect() as conn:
        await conn.execute(
            "UPDATE image_generations SET status = 'cancelled'"
            " WHERE project_id = %s AND status IN ('pending', 'processing')",
            (project_id,),
        )
        await conn.execute(
            "DELETE FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
            " AND args->>'generation_id' IN"
            " (SELECT id::text FROM image_generations WHERE project_id = %s)",
            (project_id,),
        )


async def _status_change_ms(bench: Bench, project_id: uuid.UUID, changes: int) -> float:
    async with await bench.connect() as conn:
        cur = await conn.execute(
            "SELECT id FROM image_generations WHERE project_id = %s LIMIT 1", (project_id,)
        )
        row = await cur.fetchone()
        assert row is not None
        timings = []
        for i in range(changes):
            status = "processing" if i % 2 == 0 else "pending"
            started = time.perf_counter()
            await conn.execute(
                "UPDATE image_generations SET status = %s WHERE id = %s", (status, row[0])
            )
            timings.append((time.perf_counter() - started) * 1000)
    return median(timings)


async def counter_cost(bench: Bench, large: int, changes: int) -> Result:
    _, _, small_project = await bench.tenant()
    _, _, large_project = await bench.tenant()
    async with await bench.connect() as conn:
        for project, count in ((small_project, 10), (large_project, large)):
            await conn.execute(
                "INSERT INTO image_generations (project_id, prompt, job_id) SELECT %s, 'c', -1 FROM generate_series(1, %s)",
                (project, count),
            )
    small = await _status_change_ms(bench, small_project, changes)
    big = await _status_change_ms(bench, large_project, changes)
    return Result(
        scenario=f"status change, project of {large:,} vs 10 images",
        figure=round(big, 3),
        unit="ms median",
        reference=round(small, 3),
        reference_name="same change, project of 10",
        ratio=round(big / small, 2),
        target="<= 1.2x",
        details={"changes": changes},
    )


async def worker_memory(bench: Bench, small: int, large: int) -> Result:
    _, _, project_id = await bench.tenant()
    worker = await _start_and_wait(
        bench, [sys.executable, "-m", "worker.cli", "worker"], WORKER_CONCURRENCY="10"
    )
    await _drain_generations(bench, project_id, small)
    after_small = rss_mb(worker.pid)
    _, _, second_project = await bench.tenant()
    await _drain_generations(bench, second_project, large - small)
    after_large = rss_mb(worker.pid)
    bench.stop(worker)
    return Result(
        scenario=f"worker memory after {large:,} vs {small} jobs",
        figure=round(after_large, 1),
        unit="MB RSS",
        reference=round(after_small, 1),
        reference_name=f"RSS after {small} jobs",
        ratio=round(after_large / after_small, 2),
        target="no growth (~1.0x)",
    )


async def scale_out(bench: Bench, jobs: int, workers: int, concurrency: int) -> Result:
    """The same drain with `workers` worker processes on one Postgres."""
    _, _, project_id = await bench.tenant()
    processes = []
    for _ in range(workers):
        processes.append(
            await _start_and_wait(
                bench,
                [sys.executable, "-m", "worker.cli", "worker"],
                WORKER_CONCURRENCY=str(concurrency),
            )
        )
    await asyncio.sleep(0.5)
    elapsed = await _drain_generations(bench, project_id, jobs)
    backends = await _count(
        bench, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
    )
    for process in processes:
        bench.stop(process)
    return Result(
        scenario=f"scale-out, {workers} worker process(es) x concurrency {concurrency}",
        figure=round(jobs / elapsed, 1),
        unit="generations/s",
        target="grows with workers until Postgres or the cores saturate",
        details={"jobs": jobs, "database_connections": backends},
    )


async def fairness(bench: Bench, backlog: int, samples: int) -> Result:
    """Workspace A queues `backlog` generations; workspace B then asks for one at a time. B's
    start delay (created -> started), p95, against one generation's duration (median)."""
    delay_ms = 200
    _, _, project_a = await bench.tenant()
    _, _, project_b = await bench.tenant()
    worker = await _start_and_wait(
        bench,
        [sys.executable, "-m", "worker.cli", "worker"],
        WORKER_CONCURRENCY="10",
        LOCAL_PROVIDER_DELAY_MS=str(delay_ms),
    )
    await asyncio.sleep(0.5)
    await _insert_generations(bench, project_a, backlog)
    waits: list[float] = []
    async with await bench.connect() as conn:
        for i in range(samples):
            cur = await conn.execute(
                "INSERT INTO image_generations (project_id, prompt, prompt_spec)"
                " VALUES (%s, %s, %s::jsonb) RETURNING id",
                (project_b, f"fair {i}", SMALL_IMAGE),
            )
            row = await cur.fetchone()
            assert row is not None

            async def started(generation_id: uuid.UUID = row[0]) -> bool:
                return bool(
                    await _count(
                        bench,
                        "SELECT count(*) FROM image_generations WHERE id = %s AND started_at IS NOT NULL",
                        (generation_id,),
                    )
                )

            await bench.wait_for(started, 120)
            cur = await conn.execute(
                "SELECT extract(epoch FROM started_at - created_at) FROM image_generations WHERE id = %s",
                (row[0],),
            )
            waited = await cur.fetchone()
            assert waited is not None
            waits.append(float(waited[0]))
            await asyncio.sleep(0.1)
        cur = await conn.execute(
            "SELECT extract(epoch FROM finished_at - started_at) FROM image_generations"
            " WHERE project_id = %s AND status = 'completed'",
            (project_a,),
        )
        rows = await cur.fetchall()
    queued_behind = await _count(
        bench,
        "SELECT count(*) FROM image_generations WHERE project_id = %s AND status = 'pending'",
        (project_a,),
    )
    bench.stop(worker)
    # A's backlog would otherwise be the next scenario's first work (recovery's 10-minute jobs).
    await _withdraw(bench, project_a)
    duration = median([float(r[0]) for r in rows])
    p95 = percentile(waits, 95)
    return Result(
        scenario=f"fairness: B's start delay behind A's backlog of {backlog}",
        figure=round(p95 * 1000, 1),
        unit="ms p95",
        reference=round(duration * 1000, 1),
        reference_name="ms, one generation (median)",
        ratio=round(p95 / duration, 2),
        target="<= 1.0x",
        details={
            "samples": samples,
            "p50_ms": round(percentile(waits, 50) * 1000, 1),
            "a_still_queued_at_end": queued_behind,
            "concurrency": 10,
            "provider_delay_ms": delay_ms,
        },
    )


async def recovery(bench: Bench, jobs: int) -> Result:
    """`jobs` generations running on one worker process, which is killed with SIGKILL: seconds
    until every one of them is running again (attempt 2) or done on a second worker. The
    heartbeat pass is off (the bench's RESCUE_CRON): only the presence lock can tell."""
    _, _, project_id = await bench.tenant()
    command = [sys.executable, "-m", "worker.cli", "worker"]
    doomed = await _start_and_wait(
        bench, command, WORKER_CONCURRENCY=str(jobs), LOCAL_PROVIDER_DELAY_MS="600000"
    )
    await _insert_generations(bench, project_id, jobs)

    def counted(sql: str) -> Callable[[], Awaitable[bool]]:
        async def done() -> bool:
            return await _count(bench, sql, (project_id,)) >= jobs

        return done

    all_running = counted(
        "SELECT count(*) FROM image_generations WHERE project_id = %s AND status = 'processing'"
    )
    await bench.wait_for(all_running, 60)
    await _start_and_wait(bench, command, WORKER_CONCURRENCY=str(jobs))

    async def both_present() -> bool:
        held = await _count(
            bench,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND objsubid = 2 AND classid = %s::bigint::oid"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            (PRESENCE_NAMESPACE,),
        )
        return held >= 2

    await bench.wait_for(both_present, 60)
    killed = time.perf_counter()
    doomed.send_signal(signal.SIGKILL)
    running_again = counted(
        "SELECT count(*) FROM image_generations WHERE project_id = %s"
        " AND (attempts >= 2 OR status = 'completed')"
    )
    await bench.wait_for(running_again, 120)
    elapsed = time.perf_counter() - killed
    completed = counted(
        "SELECT count(*) FROM image_generations WHERE project_id = %s AND status = 'completed'"
    )
    await bench.wait_for(completed, 120)
    bench.stop_all()
    return Result(
        scenario=f"recovery after kill -9, {jobs} jobs in flight",
        figure=round(elapsed, 2),
        unit="s until all run again",
        target="< 10 s",
        details={"jobs": jobs, "heartbeat_fallback": "off"},
    )


async def inflight(bench: Bench, generations: int, delay_ms: int = 20_000) -> Result:
    """`generations` inserted at once, one worker process at that concurrency, the `local`
    provider taking `delay_ms` each: elapsed against the ideal (one provider delay), the
    worker's peak database connections and its RSS. Capped at three times the ideal (plus
    start-up), after which the worker is killed and what finished is reported."""
    ideal_s = delay_ms / 1000
    cap_s = 3 * ideal_s + 30
    application = "imagejobs-bench-inflight"
    _, _, project_id = await bench.tenant()
    worker = await _start_and_wait(
        bench,
        WORKER_COMMAND,
        WORKER_CONCURRENCY=str(generations),
        LOCAL_PROVIDER_DELAY_MS=str(delay_ms),
        PGAPPNAME=application,
    )
    await asyncio.sleep(0.5)
    rss_start = peak_rss = rss_mb(worker.pid)
    peak_connections = peak_running = 0
    finished = failed = 0
    timed_out = False
    async with await bench.connect() as monitor:
        await _insert_generations(bench, project_id, generations)
        started = time.perf_counter()
        while True:
            cur = await monitor.execute(
                "SELECT completed_count, failed_count, processing_count FROM projects"
                " WHERE id = %s",
                (project_id,),
            )
            row = await cur.fetchone()
            assert row is not None
            completed, failed, running = (int(v) for v in row)
            finished = completed + failed
            cur = await monitor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND (application_name IN (%s, 'imagejobs-worker')"
                " OR application_name LIKE 'imagejobs-presence %%')",
                (application,),
            )
            counted = await cur.fetchone()
            peak_connections = max(peak_connections, int(counted[0]) if counted else 0)
            peak_running = max(peak_running, running)
            if worker.poll() is None:
                peak_rss = max(peak_rss, rss_mb(worker.pid))
            if finished >= generations:
                break
            if time.perf_counter() - started > cap_s or worker.poll() is not None:
                timed_out = True
                break
            await asyncio.sleep(0.25)
        elapsed = time.perf_counter() - started
        cur = await monitor.execute(
            "SELECT extract(epoch FROM max(started_at) - min(created_at)),"
            " extract(epoch FROM percentile_cont(0.5) WITHIN GROUP"
            " (ORDER BY finished_at - started_at))"
            " FROM image_generations WHERE project_id = %s",
            (project_id,),
        )
        spread = await cur.fetchone()
    rss_end = rss_mb(worker.pid) if worker.poll() is None else float("nan")
    # A run that did not finish leaves thousands of 20 s jobs: kill rather than drain them, and
    # take them out of the queue so no later worker picks them up.
    bench.stop(worker, kill=timed_out)
    if timed_out:
        await _withdraw(bench, project_id)
    all_started_s = float(spread[0]) if spread and spread[0] is not None else float("nan")
    median_run_s = float(spread[1]) if spread and spread[1] is not None else float("nan")
    return Result(
        scenario=f"in-flight generations, {generations:,} on one worker, provider {ideal_s:g} s",
        figure=round(elapsed, 1),
        unit="s elapsed" + (" (capped)" if timed_out else ""),
        reference=ideal_s,
        reference_name="s ideal (one provider delay)",
        ratio=round(elapsed / ideal_s, 2),
        target="<= 1.2x, <= 20 connections, RSS flat",
        details={
            "finished": finished,
            "failed": failed,
            "peak_running": peak_running,
            "last_started_after_s": round(all_started_s, 1),
            "median_run_s": round(median_run_s, 1),
            "peak_db_connections": peak_connections,
            "rss_mb_start": round(rss_start, 1),
            "rss_mb_peak": round(peak_rss, 1),
            "rss_mb_end": round(rss_end, 1),
        },
    )


class _PgSnapshot:
    """What Postgres has spent so far on this database: CPU per backend (from /proc), statement
    time per statement (pg_stat_statements, when loaded) and time per function
    (pg_stat_user_functions, with track_functions = all)."""

    def __init__(self) -> None:
        self.cpu: dict[int, float] = {}
        self.statements: dict[int, tuple[str, int, float]] = {}
        self.functions: dict[str, tuple[int, float]] = {}


async def _pg_snapshot(conn: Any, statements: bool) -> _PgSnapshot:
    snapshot = _PgSnapshot()
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    cur = await conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
    )
    snapshot.cpu = backend_cpu_ms([int(r[0]) for r in await cur.fetchall()])
    if statements:
        cur = await conn.execute(
            "SELECT queryid, query, calls, total_exec_time FROM pg_stat_statements"
            " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND toplevel AND queryid IS NOT NULL"
        )
        snapshot.statements = {
            int(r[0]): (str(r[1]), int(r[2]), float(r[3])) for r in await cur.fetchall()
        }
    cur = await conn.execute(
        "SELECT schemaname || '.' || funcname, calls, self_time FROM pg_stat_user_functions"
    )
    snapshot.functions = {str(r[0]): (int(r[1]), float(r[2])) for r in await cur.fetchall()}
    return snapshot


class _PgCost:
    def __init__(self, before: _PgSnapshot, after: _PgSnapshot, units: int) -> None:
        self.units = units
        # Backends that were born during the run count from zero: their start-up is the run's.
        self.cpu_ms = sum(t - before.cpu.get(pid, 0.0) for pid, t in after.cpu.items()) / units
        self.statements: list[tuple[float, float, str]] = []
        for queryid, (query, calls, total) in after.statements.items():
            _, calls_before, total_before = before.statements.get(queryid, ("", 0, 0.0))
            if calls - calls_before <= 0 or "pg_stat" in query:
                continue
            self.statements.append(
                ((total - total_before) / units, (calls - calls_before) / units, query)
            )
        self.statements.sort(reverse=True)
        self.statement_ms = sum(ms for ms, _, _ in self.statements)
        self.functions: list[tuple[float, float, str]] = []
        for name, (calls, self_time) in after.functions.items():
            calls_before, time_before = before.functions.get(name, (0, 0.0))
            if calls - calls_before > 0:
                self.functions.append(
                    ((self_time - time_before) / units, (calls - calls_before) / units, name)
                )
        self.functions.sort(reverse=True)
        self.function_ms = sum(ms for ms, _, _ in self.functions)

    def lines(self, what: str, top: int = 12) -> dict[str, list[str]]:
        def short(query: str) -> str:
            return " ".join(query.split())[:140]

        result = {}
        if self.statements:
            result[f"{what}: statements, ms per unit (calls per unit)"] = [
                f"{ms:7.3f} ms ({calls:5.2f})  {short(query)}"
                for ms, calls, query in self.statements[:top]
            ]
        if self.functions:
            result[f"{what}: functions (triggers included), self ms per unit (calls)"] = [
                f"{ms:7.3f} ms ({calls:5.2f})  {name}" for ms, calls, name in self.functions[:top]
            ]
        return result


async def _measured(
    bench: Bench,
    statements: bool,
    units: int,
    work: Callable[[Any], Awaitable[None]],
    worker_pid: int,
) -> tuple[_PgCost, float]:
    """The run's Postgres cost per unit, and the worker process's own CPU ms per unit."""
    async with await bench.connect() as probe, await bench.connect() as writer:
        before = await _pg_snapshot(probe, statements)
        worker_before = _cpu_s(worker_pid)
        await work(writer)
        worker_ms = (_cpu_s(worker_pid) - worker_before) * 1000 / units
        # Backends publish their function and statement counters when idle, at most once a
        # second: wait for the last ones.
        await asyncio.sleep(1.5)
        after = await _pg_snapshot(probe, statements)
    return _PgCost(before, after, units), worker_ms


async def _pg_stat_statements(bench: Bench) -> bool:
    """pg_stat_statements usable here (it needs shared_preload_libraries)."""
    try:
        async with await bench.connect() as conn:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            await conn.execute("SELECT count(*) FROM pg_stat_statements LIMIT 1")
    except Exception:
        return False
    return True


async def pg_cost(bench: Bench, jobs: int, concurrency: int = 10, projects: int = 1) -> Result:
    """Postgres CPU per generation: the CPU time of every backend of the bench database, read
    from /proc (so the server must run on this machine), over a drained run of `jobs`
    generations, divided by `jobs`. It is everything Postgres does for them in those backends —
    parse, plan, execute, every trigger, NOTIFY, commit — but not the WAL writer's or
    autovacuum's share. Reference: the same for procrastinate no-op jobs (defer, fetch,
    finish). With pg_stat_statements loaded, statement time per generation (triggers run inside
    their statement) and its top statements come with it; with track_functions = all (set on
    the database here, superuser only), time per function and trigger."""
    statements = await _pg_stat_statements(bench)
    tracked = True
    try:
        async with await bench.connect() as conn:
            await conn.execute(
                sql.SQL("ALTER DATABASE {} SET track_functions = 'all'").format(
                    sql.Identifier(conn.info.dbname)
                )
            )
    except Exception:
        tracked = False
    warmup = 20
    noop_command = [sys.executable, "-m", "procrastinate", "--app=worker.devtools.bench.noop.app"]
    noop_command += ["worker", "--queues", NOOP_QUEUE, "--concurrency", str(concurrency)]
    noop_worker = await _start_and_wait(bench, noop_command)
    succeeded = "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'bench_noop' AND status = 'succeeded'"

    async def defer_noop(conn: Any, count: int) -> None:
        done_before = await _count(bench, succeeded)
        await conn.execute(
            "SELECT procrastinate_defer_jobs_v1(array_agg(ROW(%s, 'bench_noop', 0, NULL, NULL,"
            " '{}'::jsonb, NULL)::procrastinate_job_to_defer_v1)) FROM generate_series(1, %s)",
            (NOOP_QUEUE, count),
        )

        async def drained() -> bool:
            return await _count(bench, succeeded) - done_before >= count

        await bench.wait_for(drained, 300)

    async with await bench.connect() as conn:
        await defer_noop(conn, warmup)

    async def noop_run(conn: Any) -> None:
        await defer_noop(conn, jobs)

    reference, noop_worker_ms = await _measured(bench, statements, jobs, noop_run, noop_worker.pid)
    bench.stop(noop_worker)

    project_ids = await _projects(bench, projects)
    worker = await _start_and_wait(bench, WORKER_COMMAND, WORKER_CONCURRENCY=str(concurrency))
    async with await bench.connect() as conn:
        await _insert_spread(conn, project_ids, warmup)
    await bench.wait_for(_completed(bench, project_ids, warmup), 120)

    async def generation_run(conn: Any) -> None:
        await _insert_spread(conn, project_ids, jobs)
        await bench.wait_for(_completed(bench, project_ids, warmup + jobs), 600)

    cost, worker_ms = await _measured(bench, statements, jobs, generation_run, worker.pid)
    bench.stop(worker)
    details: dict[str, Any] = {
        "jobs": jobs,
        "concurrency": concurrency,
        "projects": projects,
        "method": "backend CPU (/proc)",
        "worker_cpu_ms": round(worker_ms, 3),
        "noop_worker_cpu_ms": round(noop_worker_ms, 3),
    }
    if statements:
        details["statement_ms"] = round(cost.statement_ms, 3)
        details["noop_statement_ms"] = round(reference.statement_ms, 3)
    if tracked:
        details["function_self_ms"] = round(cost.function_ms, 3)
        details["noop_function_self_ms"] = round(reference.function_ms, 3)
    figure, reference_figure = cost.cpu_ms, reference.cpu_ms
    if not figure and statements:  # a server elsewhere: statement time is what there is
        figure, reference_figure = cost.statement_ms, reference.statement_ms
        details["method"] = "pg_stat_statements"
    spread = f", {projects} projects" if projects > 1 else ""
    return Result(
        scenario=f"Postgres cost per generation{spread}",
        figure=round(figure, 3),
        unit="ms",
        reference=round(reference_figure, 3),
        reference_name="ms per procrastinate no-op job",
        ratio=round(figure / reference_figure, 2) if reference_figure else None,
        target="<= 1.0 ms",
        details=details,
        breakdown={**cost.lines("generation"), **reference.lines("no-op job")},
    )
