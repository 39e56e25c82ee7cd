"""The benchmark harness itself works (the figures are for scripts/bench, not for tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_bench_runs_a_scenario_and_writes_results(server_url: str, tmp_path: Path) -> None:
    output = tmp_path / "results.json"
    command = [sys.executable, "-m", "worker.cli", "bench", "--quick", "--only", "counters"]
    command += ["--database-url", server_url, "--output", str(output)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| status change, project of 10,000 vs 10 images |" in result.stdout
    document = json.loads(output.read_text())
    (counters,) = document["results"]
    assert counters["ratio"] > 0
    assert counters["reference_name"] == "same change, project of 10"


def test_bench_measures_postgres_cost_and_generations_in_flight(
    server_url: str, tmp_path: Path
) -> None:
    """pgcost and inflight, tiny: 20 generations each, a 1 s provider delay."""
    output = tmp_path / "results.json"
    command = [sys.executable, "-m", "worker.cli", "bench", "--quick", "--only", "pgcost"]
    command += ["inflight", "--size", "cost=150", "--size", "inflight=20"]
    command += ["--size", "delay_ms=1000", "--database-url", server_url, "--output", str(output)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads(output.read_text())
    cost, inflight = document["results"]
    assert cost["scenario"] == "Postgres cost per generation"
    assert cost["figure"] > 0 and cost["reference"] > 0
    assert cost["reference_name"] == "ms per procrastinate no-op job"
    assert inflight["details"]["finished"] == 20
    assert inflight["reference"] == 1.0
    # 20 generations at concurrency 20 run side by side: far less than 20 provider delays.
    assert inflight["figure"] < 10
    assert inflight["details"]["peak_db_connections"] > 0
    assert inflight["details"]["rss_mb_peak"] >= inflight["details"]["rss_mb_start"]


def test_profile_summary_reads_py_spy_raw_stacks(tmp_path: Path) -> None:
    from worker.devtools.bench.harness import summarize_profiles

    (tmp_path / "worker-0.txt").write_text(
        "run (asyncio/runners.py:44);run_job (procrastinate/worker.py:9);step (worker/queue/a.py:9) 3\n"
        "run (asyncio/runners.py:44);run_job (procrastinate/worker.py:12) 1\n"
    )
    summary = summarize_profiles(tmp_path)
    assert "4 active samples" in summary
    self_part, inclusive_part = summary.split("inclusive")
    assert "75.0%  step (queue/a.py)" in self_part
    # Lines of one function are folded together; asyncio's own frames are left out.
    assert "100.0%  run_job (procrastinate/worker.py)" in inclusive_part
    assert "runners.py" not in inclusive_part


def test_bench_sse_readers_receive_every_update(server_url: str, tmp_path: Path) -> None:
    """The SSE scenario's reader processes (worker/devtools/bench/sse_reader.py), tiny."""
    output = tmp_path / "results.json"
    command = [sys.executable, "-m", "worker.cli", "bench", "--quick", "--only", "sse"]
    command += ["--size", "clients=30", "--size", "updates=4"]
    command += ["--database-url", server_url, "--output", str(output)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (sse,) = json.loads(output.read_text())["results"]
    assert sse["scenario"] == "SSE fan-out, 30 clients"
    assert sse["details"]["deliveries"] == sse["details"]["expected_deliveries"] == 120
    assert sse["details"]["reader_processes"] == 2
    assert 0 < sse["figure"] <= sse["details"]["p99_ms"]
