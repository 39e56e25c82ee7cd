"""The reference: procrastinate alone, with a task that does nothing."""

from __future__ import annotations

import os

from procrastinate import App, PsycopgConnector

QUEUE = "bench_noop"
# Run as `procrastinate --app=worker.devtools.bench.noop.app worker`: the URL comes from the environment.
app = App(connector=PsycopgConnector(conninfo=os.environ.get("DATABASE_URL", "")))


@app.task(name="bench_noop", queue=QUEUE)
async def noop() -> None:
    return None
