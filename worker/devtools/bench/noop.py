"""The reference: procrastinate alone, with a task that does nothing."""

from __future__ import annotations

from procrastinate import App, PsycopgConnector

from worker.core.config import read_setting

QUEUE = "bench_noop"
# Run as `procrastinate --app=worker.devtools.bench.noop.app worker`: the URL comes from the environment.
app = App(connector=PsycopgConnector(conninfo=read_setting("database_url") or ""))


@app.task(name="bench_noop", queue=QUEUE)
async def noop() -> None:
    return None
