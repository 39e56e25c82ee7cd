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
from worker.devtools.bench.harness import Bench, Result, bench_database, summarize_profiles

# Run only when named with --only.
OPTIONAL = {"spread"}
QUICK = {
    "jobs": 300,
    "samples": 30,
    "clients": 1_000,
    "updates": 10,
    "requests": 400,
    "hooks": 1_000,
    "large": 10_000,
    "memory": 1_000,
    "backlog": 300,
    "fair_samples": 20,
    "recovery": 16,
    "cost": 300,
    "inflight": 1_000,
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
    "cost": 2_000,
    "inflight": 10_000,
}


async def run(
    quick: bool,
    database_url: str | None,
    only: list[str] | None,
    profile_dir: Path | None = None,
    sizes: dict[str, int] | None = None,
) -> list[Result]:
    size = {**(QUICK if quick else FULL), **(sizes or {})}
    # pgcost right after throughput, on a drained queue (fairness leaves a backlog behind);
    # inflight last, since a capped run leaves the most behind.
    plan: dict[str, Callable[[Bench], list[Coroutine[Any, Any, Result]]]] = {
        "throughput": lambda b: [scenarios.worker_throughput(b, size["jobs"], c) for c in (10, 50)],
        "pgcost": lambda b: [scenarios.pg_cost(b, size["cost"])],
        # Not in the default run: what the project's counter row costs (issue 18's levers).
        "spread": lambda b: (
            [scenarios.worker_throughput(b, size["jobs"], c, projects=50) for c in (10, 50)]
            + [scenarios.pg_cost(b, size["cost"], projects=50)]
        ),
        "pickup": lambda b: [scenarios.pickup_latency(b, size["samples"])],
        "sse": lambda b: [scenarios.sse_fanout(b, size["clients"], size["updates"])],
        "create": lambda b: [scenarios.create_throughput(b, size["requests"], 20)],
        "webhook": lambda b: [scenarios.webhook_handler(b, size["hooks"], 10)],
        "counters": lambda b: [scenarios.counter_cost(b, size["large"], 200)],
        "memory": lambda b: [scenarios.worker_memory(b, 100, size["memory"])],
        "scaling": lambda b: [scenarios.scale_out(b, size["jobs"], n, 10) for n in (1, 2, 4)],
        "fairness": lambda b: [scenarios.fairness(b, size["backlog"], size["fair_samples"])],
        "recovery": lambda b: [scenarios.recovery(b, size["recovery"])],
        "inflight": lambda b: [
            scenarios.inflight(b, size["inflight"], size.get("delay_ms", 20_000))
        ],
    }
    unknown = set(only or ()) - set(plan)
    if unknown:
        raise SystemExit(
            f"unknown scenarios: {', '.join(sorted(unknown))} (known: {', '.join(plan)})"
        )
    results: list[Result] = []
    failures.clear()
    with tempfile.TemporaryDirectory(prefix="imagejobs-bench-") as workdir:
        async with bench_database(database_url, Path(workdir)) as url:
            bench = Bench(url, Path(workdir), profile_dir)
            try:
                for name, make in plan.items():
                    if (only and name not in only) or (not only and name in OPTIONAL):
                        continue
                    for scenario in make(bench):
                        started = time.perf_counter()
                        try:
                            result = await scenario
                        except Exception as exc:
                            # One scenario that fails (or hits its time cap) is reported and
                            # the others still run; the exit status says so at the end.
                            result = Result(
                                scenario=f"{name} FAILED: {type(exc).__name__}: {exc}"[:200],
                                figure=float("nan"),
                                unit="",
                            )
                            failures.append(name)
                        result.details["seconds"] = round(time.perf_counter() - started, 1)
                        print(_row(result), flush=True)
                        results.append(result)
            finally:
                bench.stop_all()
    return results


failures: list[str] = []


def _breakdowns(results: list[Result]) -> str:
    parts = []
    for result in results:
        for title, lines in result.breakdown.items():
            parts.append(
                f"\n{result.scenario}, {title}:\n" + "\n".join(f"  {line}" for line in lines)
            )
    return "\n".join(parts)


def _row(result: Result) -> str:
    reference = (
        f"{result.reference} {result.reference_name}" if result.reference is not None else "-"
    )
    ratio = f"{result.ratio}x" if result.ratio is not None else "-"
    extra = ", ".join(f"{k}={v}" for k, v in result.details.items())
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
        help="scenarios: throughput pgcost pickup sse create webhook counters memory scaling"
        " fairness recovery inflight; optional: spread",
    )
    parser.add_argument("--output", default="bench/results.json")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample every worker process with py-spy (cProfile without it) into bench/profile/",
    )
    parser.add_argument(
        "--size",
        action="append",
        default=[],
        metavar="NAME=N",
        help="override one size, e.g. --size inflight=50 --size delay_ms=2000 (tests)",
    )
    args = parser.parse_args(argv)
    sizes = {}
    for item in args.size:
        name, _, value = item.partition("=")
        if name not in FULL and name != "delay_ms":
            parser.error(f"unknown size {name!r}")
        sizes[name] = int(value)
    profile_dir = None
    if args.profile:
        profile_dir = Path(args.output).parent / "profile"
        profile_dir.mkdir(parents=True, exist_ok=True)
        for old in profile_dir.glob("worker-*"):
            old.unlink()
    print("| scenario | figure | reference (same run) | ratio | target | details |")
    print("| --- | --- | --- | --- | --- | --- |")
    started = time.perf_counter()
    results = asyncio.run(run(args.quick, args.database_url, args.only, profile_dir, sizes))
    print(_breakdowns(results))
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
    if profile_dir is not None:
        summary = summarize_profiles(profile_dir)
        (profile_dir / "summary.txt").write_text(summary + "\n")
        print(f"\nworker profile ({profile_dir}):\n{summary}")
    if failures:
        raise SystemExit(f"failed: {', '.join(failures)}")
