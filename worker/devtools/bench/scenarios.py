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
from standardwebhooks import Webhook

from worker.devtools.bench.harness import Bench, Result, median, percentile, rss_mb
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


async def worker_throughput(bench: Bench, jobs: int, concurrency: int) -> Result:
    reference = await reference_drain(bench, jobs, concurrency)
    _, _, project_id = await bench.tenant()
    worker = await _start_and_wait(
        bench, [sys.executable, "-m", "worker.cli", "worker"], WORKER_CONCURRENCY=str(concurrency)
    )
    await asyncio.sleep(0.5)
    elapsed = await _drain_generations(bench, project_id, jobs)
    bench.stop(worker)
    rate = jobs / elapsed
    return Result(
        scenario=f"worker throughput, concurrency {concurrency}",
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


async def sse_fanout(bench: Bench, clients: int, updates: int) -> Result:
    api = await bench.start_api()
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
    received: dict[int, list[float]] = {}
    ready = asyncio.Event()
    opened = 0

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal opened
        async with http.stream("GET", f"/v1/generations/{generation_id}/events") as response:
            first = True
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if first:
                    first = False
                    opened += 1
                    if opened == clients:
                        ready.set()
                    continue
                progress = int(json.loads(line[6:])["progress"])
                received.setdefault(progress, []).append(time.perf_counter())
                if progress >= 50 + updates:
                    return

    limits = httpx.Limits(max_connections=clients + 10, max_keepalive_connections=clients + 10)
    async with httpx.AsyncClient(
        base_url=api, headers={"Authorization": f"Bearer {key}"}, timeout=120, limits=limits
    ) as http:
        tasks = [asyncio.create_task(client(http)) for _ in range(clients)]
        await asyncio.wait_for(ready.wait(), 120)
        commits: dict[int, float] = {}
        async with await bench.connect() as conn:
            for progress in range(51, 51 + updates):
                await conn.execute(
                    "UPDATE image_generations SET progress = %s WHERE id = %s",
                    (progress, generation_id),
                )
                commits[progress] = time.perf_counter()
                await asyncio.sleep(0.05)
        await asyncio.wait_for(asyncio.gather(*tasks), 120)
    latencies = [(t - commits[p]) * 1000 for p, times in received.items() for t in times]
    listen = await _count(
        bench, "SELECT count(*) FROM pg_stat_activity WHERE query = 'LISTEN project_status'"
    )
    api_process = bench.processes[-1]
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
            "listen_connections": listen,
            "api_rss_mb": round(memory, 1),
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
    secret = "whsec_" + base64.b64encode(b"bench-webhook-secret").decode()
    api = await bench.start_api(WEBHOOK_SECRET=secret)
    _, _, project_id = await bench.tenant()
    async with await bench.connect() as conn:
        await conn.execute(
            "INSERT INTO image_generations (project_id, prompt, job_id, provider_job_id) "
            "SELECT %s, 'hook', -1, 'bench-job-' || i FROM generate_series(1, %s) AS i",
            (project_id, deliveries),
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
        queue = list(range(1, deliveries + 1))

        async def sender() -> None:
            while queue:
                body, headers = signed(queue.pop())
                sent = time.perf_counter()
                response = await http.post("/v1/webhooks/generic", content=body, headers=headers)
                assert response.status_code == 202, response.text
                latencies.append((time.perf_counter() - sent) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(concurrency)))
        rate = len(latencies) / (time.perf_counter() - started)
    bench.stop(bench.processes[-1])
    return Result(
        scenario=f"webhook handler, {concurrency} senders",
        figure=round(percentile(latencies, 99), 2),
        unit="ms p99",
        target="p99 <= 20 ms",
        details={
            "deliveries_per_s": round(rate, 1),
            "p50_ms": round(percentile(latencies, 50), 2),
            "deliveries": len(latencies),
        },
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
