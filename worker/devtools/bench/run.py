"""Runs the scenarios, prints the table, writes bench/results.json."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import msgspec

from worker.core.config import BenchSettings, load
from worker.devtools.bench import scenarios
from worker.devtools.bench.harness import Bench, Result, bench_database

QUICK = {
    "jobs": 300,
    "samples": 30,
    "clients": 100,
    "updates": 10,
    "requests": 400,
    "hooks": 300,
    "large": 10_000,
    "memory": 1_000,
    "backlog": 300,
    "fair_samples": 20,
    "recovery": 16,
}
FULL = {
    "jobs": 2_000,
    "samples": 200,
    "clients": 1_000,
    "updates": 20,
    "requests": 2_000,
    "hooks": 2_000,
    "large": 100_000,
    "memory": 10_000,
    "backlog": 2_000,
    "fair_samples": 50,
    "recovery": 32,
}


async def run(quick: bool, database_url: str | None, only: list[str] | None) -> list[Result]:
    size = QUICK if quick else FULL
    plan: dict[str, Callable[[Bench], list[Coroutine[Any, Any, Result]]]] = {
        "throughput": lambda b: [scenarios.worker_throughput(b, size["jobs"], c) for c in (10, 50)],
        "pickup": lambda b: [scenarios.pickup_latency(b, size["samples"])],
        "sse": lambda b: [scenarios.sse_fanout(b, size["clients"], size["updates"])],
        "create": lambda b: [scenarios.create_throughput(b, size["requests"], 20)],
        "webhook": lambda b: [scenarios.webhook_handler(b, size["hooks"], 10)],
        "counters": lambda b: [scenarios.counter_cost(b, size["large"], 200)],
        "memory": lambda b: [scenarios.worker_memory(b, 100, size["memory"])],
        "scaling": lambda b: [scenarios.scale_out(b, size["jobs"], n, 10) for n in (1, 2, 4)],
        "fairness": lambda b: [scenarios.fairness(b, size["backlog"], size["fair_samples"])],
        "recovery": lambda b: [scenarios.recovery(b, size["recovery"])],
    }
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="imagejobs-bench-") as workdir:
        async with bench_database(database_url, Path(workdir)) as url:
            bench = Bench(url, Path(workdir))
            try:
                for name, make in plan.items():
                    if only and name not in only:
                        continue
                    for scenario in make(bench):
                        started = time.perf_counter()
                        result = await scenario
                        result.details["seconds"] = round(time.perf_counter() - started, 1)
                        print(_row(result), flush=True)
                        results.append(result)
            finally:
                bench.stop_all()
    return results


def _row(result: Result) -> str:
    reference = (
        f"{result.reference} {result.reference_name}" if result.reference is not None else "-"
    )
    ratio = f"{result.ratio}x" if result.ratio is not None else "-"
    extra = ", ".join(f"{k}={v}" for k, v in result.details.items() if k != "seconds")
    return f"| {result.scenario} | {result.figure} {result.unit} | {reference} | {ratio} | {result.target} | {extra} |"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="imagejobs bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="small sizes, for CI (under 3 minutes)"
    )
    parser.add_argument(
        "--database-url",
        default=load(BenchSettings).database_url,
        help="a server to use (default: embedded)",
    )
    parser.add_argument(
        "--only",
        nargs="*",
        help="scenarios: throughput pickup sse create webhook counters memory scaling recovery",
    )
    parser.add_argument("--output", default="bench/results.json")
    args = parser.parse_args(argv)
    print("| scenario | figure | reference (same run) | ratio | target | details |")
    print("| --- | --- | --- | --- | --- | --- |")
    started = time.perf_counter()
    results = asyncio.run(run(args.quick, args.database_url, args.only))
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    machine = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    document = {
        "quick": args.quick,
        "machine": machine,
        "seconds": round(time.perf_counter() - started, 1),
        "results": results,
    }
    output.write_bytes(msgspec.json.format(msgspec.json.encode(document)))
    print(f"\nwrote {output} in {document['seconds']} s")
