"""`imagejobs dev`: the newcomer's one command. Embedded Postgres (data under var/) unless
DATABASE_URL is set, migrations, a dev API key kept in var/, then the API and a worker as child
processes. Ctrl-C (or SIGTERM) stops the children, then the embedded server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psycopg

from worker.core.apikeys import create_api_key, hash_key
from worker.core.config import Settings
from worker.core.migrate import migrate
from worker.devtools.embedded import start_embedded_postgres

VAR = Path("var")
CREDENTIALS = VAR / "dev-credentials.json"


async def _dev_credentials(database_url: str) -> tuple[uuid.UUID, str]:
    """The same workspace and key on every run, re-created if the database was reset."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        if CREDENTIALS.exists():
            saved = json.loads(CREDENTIALS.read_text())
            cur = await conn.execute(
                "SELECT 1 FROM api_keys WHERE key_hash = %s AND revoked_at IS NULL",
                (hash_key(saved["api_key"]),),
            )
            if await cur.fetchone():
                return uuid.UUID(saved["workspace_id"]), str(saved["api_key"])
        workspace_id = uuid.uuid4()
        key = await create_api_key(conn, workspace_id, "dev")
    CREDENTIALS.write_text(json.dumps({"workspace_id": str(workspace_id), "api_key": key}))
    CREDENTIALS.chmod(0o600)
    return workspace_id, key


def _wait_ready(url: str, processes: list[subprocess.Popen[bytes]], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in processes):
            return False
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


def _stop(processes: list[subprocess.Popen[bytes]], grace: float = 30) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()


def run_dev(settings: Settings) -> int:
    VAR.mkdir(exist_ok=True)
    database_url = settings.database_url or start_embedded_postgres(VAR / "postgres")
    for name in asyncio.run(migrate(database_url)):
        print(f"applied {name}")
    workspace_id, key = asyncio.run(_dev_credentials(database_url))

    env = {**os.environ, "DATABASE_URL": database_url}
    command = [sys.executable, "-m", "worker.cli"]
    processes = [
        subprocess.Popen([*command, "api"], env=env),
        subprocess.Popen([*command, "worker"], env=env),
    ]
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    url = f"http://localhost:{settings.port}"
    if _wait_ready(url, processes):
        print(
            f"\nimagejobs is running\n"
            f"  API and dashboard: {url}/\n"
            f"  OpenAPI:           {url}/schema\n"
            f"  workspace:         {workspace_id}\n"
            f"  dev API key:       {key}\n\n"
            f'  curl -H "Authorization: Bearer {key}" -d \'{{"name":"demo"}}\' {url}/v1/projects\n'
            f'  IMAGEJOBS_API_KEY={key} .venv/bin/imagejobs generate "a lighthouse at dusk" --watch\n\n'
            "Ctrl-C stops everything.\n",
            flush=True,
        )
    code = 0
    while not stopping:
        exited = [p for p in processes if p.poll() is not None]
        if exited:
            code = exited[0].returncode or 1
            print(f"a child process exited with {exited[0].returncode}; stopping", file=sys.stderr)
            break
        time.sleep(0.2)
    _stop(processes)
    return code
