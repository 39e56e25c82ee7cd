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
