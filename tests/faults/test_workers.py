"""Workers dying, being stopped and being slow to stop: nothing lost, nothing run twice."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from tests.faults.conftest import FAST_RESCUE, Ledger, Workers

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
