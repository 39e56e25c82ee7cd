"""The bench's own stack: a fresh database, worker and API processes, and measuring helpers."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import msgspec
import psycopg

from worker.core.apikeys import create_api_key
from worker.core.migrate import migrate
from worker.devtools.embedded import start_embedded_postgres, with_database


class Result(msgspec.Struct, kw_only=True):
    scenario: str
    figure: float
    unit: str
    reference: float | None = None
    reference_name: str | None = None
    ratio: float | None = None
    target: str = ""
    details: dict[str, Any] = {}
    # Longer findings printed under the table (top statements, functions): name -> lines.
    breakdown: dict[str, list[str]] = {}


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def rss_mb(pid: int) -> float:
    import psutil

    return float(psutil.Process(pid).memory_info().rss) / 1024 / 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# The bench's own connections say so in pg_stat_activity; a scenario that counts a worker's
# connections gives the worker a name of its own (libpq's PGAPPNAME).
BENCH_APPLICATION = "imagejobs-bench"
WORKER_COMMAND = [sys.executable, "-m", "worker.cli", "worker"]


class Bench:
    def __init__(self, url: str, workdir: Path, profile_dir: Path | None = None) -> None:
        self.url = url
        self.workdir = workdir
        self.processes: list[subprocess.Popen[bytes]] = []
        # --profile: every worker process is sampled by py-spy (or, without it, run under
        # cProfile); one file per worker process in profile_dir.
        self.profile_dir = profile_dir
        self.profilers: dict[int, subprocess.Popen[bytes]] = {}

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "DATABASE_URL": self.url,
            "LOCAL_STORAGE_DIR": str(self.workdir / "storage"),
            "LOCAL_PROVIDER_DELAY_MS": "0",
            "RESCUE_CRON": "0 0 1 1 *",
            # The scenarios are the load: the per-key creation rate and stream caps would
            # measure the limiter instead of the path behind it.
            "RATE_LIMIT_CREATE_PER_MIN": "0",
            "SSE_MAX_STREAMS_PER_KEY": "0",
            "LOG_LEVEL": "WARNING",
            **extra,
        }

    def start(self, command: list[str], **extra: str) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{command[-1]}-{len(self.processes)}.log").open("ab")
        profiled = self.profile_dir is not None and command == WORKER_COMMAND
        spy = shutil.which("py-spy") or shutil.which(
            "py-spy", path=str(Path(sys.executable).parent)
        )
        if profiled and spy is None:
            assert self.profile_dir is not None
            output = self.profile_dir / f"worker-{len(self.processes)}.pstats"
            command = [sys.executable, "-m", "cProfile", "-o", str(output), *command[1:]]
        process = subprocess.Popen(
            command, env=self.env(**extra), stdout=log, stderr=subprocess.STDOUT
        )
        self.processes.append(process)
        if profiled and spy is not None:
            assert self.profile_dir is not None
            output = self.profile_dir / f"worker-{len(self.processes) - 1}.txt"
            # Raw collapsed stacks (one line per stack and its sample count), only of the
            # thread holding the GIL: where the worker's Python CPU goes (waiting on epoll or
            # an idle thread pool is not). py-spy stops and writes when the worker exits.
            spy_command = [spy, "record", "--pid", str(process.pid), "--format", "raw", "--gil"]
            spy_command += ["--rate", "200", "--nonblocking", "--output", str(output)]
            self.profilers[process.pid] = subprocess.Popen(
                spy_command,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return process

    def start_worker(self, concurrency: int) -> subprocess.Popen[bytes]:
        return self.start(
            [sys.executable, "-m", "worker.cli", "worker"], WORKER_CONCURRENCY=str(concurrency)
        )

    async def start_api(self, **extra: str) -> str:
        port = free_port()
        self.start(
            [sys.executable, "-m", "worker.cli", "api"], PORT=str(port), DB_POOL_MAX="20", **extra
        )
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient() as client:
            for _ in range(300):
                try:
                    if (await client.get(f"{url}/readyz")).status_code == 200:
                        return url
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError("the API did not start")

    def stop(self, process: subprocess.Popen[bytes], *, kill: bool = False) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        profiler = self.profilers.pop(process.pid, None)
        if profiler is not None:
            try:
                profiler.wait(30)
            except subprocess.TimeoutExpired:
                profiler.send_signal(signal.SIGINT)
                profiler.wait(10)

    def stop_all(self) -> None:
        for process in self.processes:
            self.stop(process)

    async def connect(self) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(
            self.url, autocommit=True, application_name=BENCH_APPLICATION
        )

    async def tenant(self) -> tuple[uuid.UUID, str, uuid.UUID]:
        """A workspace, its API key and a fresh project."""
        workspace = uuid.uuid4()
        async with await self.connect() as conn:
            key = await create_api_key(conn, workspace, "bench")
            cur = await conn.execute(
                "INSERT INTO projects (workspace_id, name) VALUES (%s, 'bench') RETURNING id",
                (workspace,),
            )
            row = await cur.fetchone()
        assert row is not None
        return workspace, key, row[0]

    async def wait_for(self, predicate: Callable[[], Awaitable[bool]], timeout: float) -> float:
        started = time.perf_counter()
        while not await predicate():
            if time.perf_counter() - started > timeout:
                raise TimeoutError("the benchmark did not finish in time")
            await asyncio.sleep(0.02)
        return time.perf_counter() - started


@asynccontextmanager
async def bench_database(given_url: str | None, workdir: Path) -> AsyncIterator[str]:
    """A fresh, migrated database on the given server (or an embedded one), dropped at the end."""
    server = given_url or start_embedded_postgres(Path("var") / "bench-postgres")
    name = f"imagejobs_bench_{secrets.token_hex(4)}"
    async with await psycopg.AsyncConnection.connect(server, autocommit=True) as conn:
        await conn.execute(f'CREATE DATABASE "{name}"'.encode())
    url = with_database(server, name)
    try:
        await migrate(url)
        yield url
    finally:
        async with await psycopg.AsyncConnection.connect(server, autocommit=True) as conn:
            await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)'.encode())


def backend_cpu_ms(pids: list[int]) -> dict[int, float]:
    """CPU time (user + system, ms) of each Postgres backend process that is visible here: the
    server must run on this machine. Backends that are gone or unreadable are left out."""
    import psutil

    times: dict[int, float] = {}
    for pid in pids:
        try:
            cpu = psutil.Process(pid).cpu_times()
        except (psutil.Error, OSError):
            continue
        times[pid] = (cpu.user + cpu.system) * 1000
    return times


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _frame_name(frame: str) -> str:
    """`function (path/to/module.py:123)` -> `function (module.py)`: lines folded together."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = path.split("/")
    short = "/".join(parts[-2:]) if len(parts) > 1 else path
    return f"{name} ({short})" if where else name


def summarize_profiles(profile_dir: Path, top: int = 25) -> str:
    """py-spy's raw stacks of every worker process, summed: where the samples were taken (self)
    and which frames were on the stack (inclusive), as shares of all active samples."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for path in sorted(profile_dir.glob("worker-*.txt")):
        for line in path.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = [_frame_name(f) for f in stack.split(";")]
            # py-spy's raw format starts with the process and thread names.
            frames = [f for f in frames if not f.startswith(("process ", "thread "))]
            if not frames:
                continue
            total += count
            own[frames[-1]] = own.get(frames[-1], 0) + count
            for frame in set(frames):
                inclusive[frame] = inclusive.get(frame, 0) + count
    if not total:
        return "no worker samples (py-spy missing or nothing ran)"
    lines = [f"{total} active samples of the worker processes", "", "self:"]
    for frame, count in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {100 * count / total:5.1f}%  {frame}")
    lines += ["", "inclusive (the interpreter's and asyncio's own frames left out):"]
    framework = ("<frozen", "asyncio/", "threading.py", "contextlib.py", "cli/")
    ours = {f: c for f, c in inclusive.items() if not any(m in f for m in framework)}
    for frame, count in sorted(ours.items(), key=lambda kv: -kv[1])[: top * 2]:
        lines.append(f"  {100 * count / total:5.1f}%  {frame}")
    return "\n".join(lines)
