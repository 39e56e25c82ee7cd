"""Workers dying, being stopped and being slow to stop: nothing lost, nothing run twice."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from tests.faults.conftest import FAST_RESCUE, Ledger, Workers
from worker.queue.presence import NAMESPACE

pytestmark = pytest.mark.faults


async def wait_processing(ledger: Ledger, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while set((await ledger.statuses()).values()) != {"processing"}:
        assert time.monotonic() < deadline, "the worker never took every job"
        await asyncio.sleep(0.05)


async def test_kill_9_mid_job_and_a_second_worker_finishes_everything(
    workers: Workers, ledger: Ledger
) -> None:
    doomed = workers.start(LOCAL_PROVIDER_DELAY_MS="4000", **FAST_RESCUE)
    await ledger.create(6, "killed mid-job")
    await wait_processing(ledger)
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(10)
    workers.start(LOCAL_PROVIDER_DELAY_MS="100", **FAST_RESCUE)
    await ledger.wait("completed", timeout=60)
    figures = await ledger.report("kill -9 with 6 jobs in flight", killed=6)
    assert figures["recovered"] == 6


async def presence_locks(ledger: Ledger) -> int:
    """Workers holding their presence lock in this database."""
    async with ledger.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND objsubid = 2 AND classid = %s::bigint::oid"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            (NAMESPACE,),
        )
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def running_again(ledger: Ledger) -> int:
    """Generations started a second time (the survivor's run counts attempt 2) or finished."""
    async with ledger.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM image_generations WHERE id = ANY(%s)"
            " AND (attempts >= 2 OR status = 'completed')",
            (ledger.ids,),
        )
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def test_a_killed_worker_is_noticed_within_10_s_without_its_heartbeat(
    workers: Workers, ledger: Ledger
) -> None:
    # The heartbeat fallback is kept out of reach (a worker is dead after 10 minutes of silence):
    # only the presence lock can bring these jobs back in time.
    slow_fallback = {"RESCUE_STALE_S": "600"}
    doomed = workers.start(LOCAL_PROVIDER_DELAY_MS="30000", **slow_fallback)
    await ledger.create(8, "killed, noticed fast")
    await wait_processing(ledger)
    before = await presence_locks(ledger)
    workers.start(LOCAL_PROVIDER_DELAY_MS="2000", **slow_fallback)
    deadline = time.monotonic() + 30
    while await presence_locks(ledger) <= before:
        assert time.monotonic() < deadline, "the second worker never took its presence lock"
        await asyncio.sleep(0.05)
    assert await running_again(ledger) == 0, "the second worker ran a job before the kill"
    killed = time.monotonic()
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(10)
    while await running_again(ledger) < len(ledger.ids):
        assert time.monotonic() - killed < 30, "the killed worker's jobs never ran again"
        await asyncio.sleep(0.05)
    recovery = time.monotonic() - killed
    print(f"\n[faults] kill -9 -> all 8 jobs running again on the other worker: {recovery:.2f} s")
    assert recovery < 10, f"the dead worker was noticed after {recovery:.1f} s"
    await ledger.wait("completed", timeout=60)
    figures = await ledger.report("kill -9, noticed by its presence lock", killed=8)
    assert figures["recovered"] == 8


async def test_sigterm_aborts_what_outlives_the_grace_and_it_runs_again(
    workers: Workers, ledger: Ledger
) -> None:
    stopped = workers.start(
        LOCAL_PROVIDER_DELAY_MS="5000", WORKER_SHUTDOWN_GRACE_S="1", **FAST_RESCUE
    )
    await ledger.create(4, "stopped mid-job")
    await wait_processing(ledger)
    started = time.monotonic()
    stopped.send_signal(signal.SIGTERM)
    assert stopped.wait(20) == 0
    assert time.monotonic() - started < 10, "shutdown took the grace period, not the jobs' duration"
    workers.start(LOCAL_PROVIDER_DELAY_MS="100", **FAST_RESCUE)
    await ledger.wait("completed", timeout=30)
    figures = await ledger.report("SIGTERM with a 1 s grace and 4 jobs of 5 s", killed=4)
    assert figures["recovered"] == 4


async def test_a_draining_worker_is_not_mistaken_for_a_dead_one(
    workers: Workers, ledger: Ledger
) -> None:
    draining = workers.start(
        LOCAL_PROVIDER_DELAY_MS="7000", WORKER_SHUTDOWN_GRACE_S="20", **FAST_RESCUE
    )
    await ledger.create(3, "long but healthy")
    await wait_processing(ledger)
    draining.send_signal(signal.SIGTERM)
    # A second worker runs the rescuer every 2 s and calls a worker dead after 4 s of silence;
    # the drain lasts ~7 s, so without the drain heartbeat these jobs would run twice.
    workers.start(LOCAL_PROVIDER_DELAY_MS="100", **FAST_RESCUE)
    assert draining.wait(30) == 0
    await ledger.wait("completed", timeout=30)
    figures = await ledger.report("SIGTERM while 3 long jobs drain, rescuer running")
    assert figures["recovered"] == 0, "a healthy draining job was run a second time"


async def test_a_live_worker_whose_presence_connection_drops_keeps_its_jobs(
    workers: Workers, ledger: Ledger
) -> None:
    slow_fallback = {"RESCUE_STALE_S": "600"}
    workers.start(LOCAL_PROVIDER_DELAY_MS="6000", **slow_fallback)
    await ledger.create(4, "healthy, presence blip")
    await wait_processing(ledger)
    before = await presence_locks(ledger)
    workers.start(LOCAL_PROVIDER_DELAY_MS="100", **slow_fallback)  # its fast pass is watching
    deadline = time.monotonic() + 30
    while await presence_locks(ledger) <= before:
        assert time.monotonic() < deadline, "the second worker never took its presence lock"
        await asyncio.sleep(0.05)
    async with ledger.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT DISTINCT j.worker_id FROM procrastinate_jobs j"
            " JOIN image_generations g ON g.job_id = j.id WHERE g.id = ANY(%s)",
            (ledger.ids,),
        )
        (worker_id,) = [row[0] for row in await cur.fetchall()]
        cur = await conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = %s AND datname = current_database()",
            (f"imagejobs-presence {worker_id}",),
        )
        assert (await cur.fetchone()) == (1,)
    await ledger.wait("completed", timeout=30)
    figures = await ledger.report("presence connection of a live worker terminated")
    assert figures["recovered"] == 0, "a live worker's job was run a second time"
    assert await presence_locks(ledger) == before + 1, "the lock was not taken again"


IN_FLIGHT = 1000


async def test_sigterm_with_a_thousand_in_flight_puts_every_one_back(
    workers: Workers, ledger: Ledger
) -> None:
    # Each aborted job goes back to the queue with procrastinate's retry, through a pool of at
    # most 20 connections: the retries are grouped (worker/queue/completer.py), so a thousand
    # of them take well under the grace a platform gives a stopping process (Render: 30 s).
    stopped = workers.start(
        WORKER_CONCURRENCY=str(IN_FLIGHT),
        LOCAL_PROVIDER_DELAY_MS="60000",
        WORKER_SHUTDOWN_GRACE_S="1",
        **FAST_RESCUE,
    )
    await ledger.create(IN_FLIGHT, "many stopped mid-job")
    await wait_processing(ledger, timeout=60)
    started = time.monotonic()
    stopped.send_signal(signal.SIGTERM)
    assert stopped.wait(60) == 0
    took = time.monotonic() - started
    print(
        f"\n[faults] SIGTERM with {IN_FLIGHT:,} in flight and a 1 s grace: exited in {took:.1f} s"
    )
    assert took < 20, f"the worker took {took:.1f} s to stop"
    async with ledger.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT j.status::text, count(*) FROM image_generations g"
            " JOIN procrastinate_jobs j ON j.id = g.job_id WHERE g.id = ANY(%s) GROUP BY 1",
            (ledger.ids,),
        )
        jobs = {str(status): int(count) for status, count in await cur.fetchall()}
    assert jobs == {"todo": IN_FLIGHT}, "every aborted job is back in the queue"
    workers.start(WORKER_CONCURRENCY="50", LOCAL_PROVIDER_DELAY_MS="0", **FAST_RESCUE)
    await ledger.wait("completed", timeout=120)
    figures = await ledger.report(f"SIGTERM with {IN_FLIGHT:,} jobs of 60 s", killed=IN_FLIGHT)
    assert figures["recovered"] == IN_FLIGHT
