"""A real API process and a real worker process on the test database."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Tenant
from tests.factories import abandon_earlier_work


class Stack:
    def __init__(self, url: str, storage: Path, log: Path) -> None:
        self.url = url
        self.storage = storage
        self.log = log
        self.processes: dict[str, subprocess.Popen[bytes]] = {}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(stack: Stack, name: str, env: dict[str, str]) -> None:
    log = (stack.log / f"{name}.log").open("ab")
    stack.processes[name] = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", name], env=env, stdout=log, stderr=subprocess.STDOUT
    )


def stop(process: subprocess.Popen[bytes], timeout: float = 15) -> int:
    process.terminate()
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


OUTGOING_SECRET = "whsec_" + "ZTJlLW91dGdvaW5nLXNlY3JldA=="


@pytest.fixture(scope="module")
def stack_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """Settings a test module adds: its STACK_ENV, or override this fixture."""
    return dict(getattr(request.module, "STACK_ENV", {}))


@pytest.fixture(scope="module")
def stack(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, stack_env: dict[str, str]
) -> Iterator[Stack]:
    """The API and a worker on the test database."""
    port = free_port()
    root = tmp_path_factory.mktemp("stack")
    stack = Stack(f"http://127.0.0.1:{port}", root / "storage", root)
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "PORT": str(port),
        "LOCAL_STORAGE_DIR": str(stack.storage),
        "PUBLIC_BASE_URL": stack.url,
        "LOCAL_PROVIDER_DELAY_MS": "50",
        "SSE_KEEPALIVE_S": "1",
        "WORKER_CONCURRENCY": "4",
        "OUTGOING_WEBHOOK_SECRET": OUTGOING_SECRET,
        **stack_env,
    }
    abandon_earlier_work(database_url)
    start(stack, "api", env)
    start(stack, "worker", env)
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{stack.url}/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or any(
            p.poll() is not None for p in stack.processes.values()
        ):
            logs = "\n".join(p.read_text() for p in root.glob("*.log"))
            pytest.fail(f"the stack did not start:\n{logs}")
        time.sleep(0.1)
    yield stack
    for process in stack.processes.values():
        stop(process)


@pytest.fixture
async def http(stack: Stack, tenant: Tenant) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.url, headers=tenant.headers, timeout=30) as client:
        yield client
