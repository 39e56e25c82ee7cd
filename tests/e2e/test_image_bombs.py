"""A hostile source image cannot take a worker down: six 12000 x 12000 PNGs (18 kB each) at
once leave the worker's peak memory within a few hundred MB of idle, and each generation fails
at once as `source_unreadable` instead of being decoded (issue 12, finding 1)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import httpx
import psutil
import pytest

from tests.bombs import large_png
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.e2e

SOURCES = 6
STACK_ENV = {"WORKER_CONCURRENCY": str(SOURCES), "LOCAL_PROVIDER_DELAY_MS": "0"}
# What "within a few hundred MB of idle" allows; one decoded source alone would be 432 MB (RGB).
MAX_GROWTH = 250 * 1024 * 1024


def tree_rss(process: psutil.Process) -> int:
    total = 0
    for member in (process, *process.children(recursive=True)):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += member.memory_info().rss
    return total


class PeakSampler:
    """Samples a process tree's RSS every few milliseconds until stopped."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.idle = tree_rss(self.process)
        self.peak = self.idle
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss(self.process))
            time.sleep(0.005)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def test_six_large_sources_at_once_keep_the_worker_small(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    stack.storage.mkdir(parents=True, exist_ok=True)
    (stack.storage / "large.png").write_bytes(large_png(12000, 12000))
    source_url = f"{stack.url}/files/large.png"
    project = (await http.post("/v1/projects", json={"name": "bombs"})).json()["id"]

    with PeakSampler(stack.processes["worker"].pid) as memory:
        created = await asyncio.gather(
            *(
                http.post(
                    "/v1/generations",
                    json={
                        "project_id": project,
                        "prompt": f"bomb {i}",
                        "original_image_url": source_url,
                    },
                )
                for i in range(SOURCES)
            )
        )
        ids = [response.json()["id"] for response in created]
        deadline = time.monotonic() + 60
        while True:
            rows = [(await http.get(f"/v1/generations/{i}")).json() for i in ids]
            if all(row["status"] in ("completed", "failed") for row in rows):
                break
            assert time.monotonic() < deadline, [row["status"] for row in rows]
            await asyncio.sleep(0.2)

    assert {(row["status"], row["error_code"], row["attempts"]) for row in rows} == {
        ("failed", "source_unreadable", 1)
    }
    assert "12000x12000" in rows[0]["error_message"]
    growth = memory.peak - memory.idle
    print(f"worker RSS: idle {memory.idle >> 20} MB, peak {memory.peak >> 20} MB")
    assert growth < MAX_GROWTH, f"the worker grew by {growth >> 20} MB"
    assert stack.processes["worker"].poll() is None
