"""The CLI's client commands, run as processes against a real API and worker."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import Tenant
from tests.e2e.conftest import Stack, free_port
from worker.core.errors import RESOLUTIONS, ErrorCode

pytestmark = pytest.mark.e2e

# Slow enough that the bar is seen at several steps, and that a CLI process started after
# `generate` (about a second of start-up) still finds the generation unfinished to cancel.
STACK_ENV = {"LOCAL_PROVIDER_DELAY_MS": "2000"}


def imagejobs(
    *args: str, url: str, api_key: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "IMAGEJOBS_URL": url,
        "IMAGEJOBS_API_KEY": api_key,
        "COLUMNS": "100",
        "NO_COLOR": "1",
    }
    env.pop("DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def generation_id_of(output: str) -> str:
    match = re.search(r"generation ([0-9a-f-]{36}) queued", output)
    assert match, output
    return match.group(1)


def test_generate_watch_shows_the_bar_to_completed(stack: Stack, tenant: Tenant) -> None:
    done = imagejobs(
        "generate", "a lighthouse at dusk", "--watch", url=stack.url, api_key=tenant.api_key
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    percents = [int(p) for p in re.findall(r"(\d+)%", out)]
    assert percents[-1] == 100
    assert percents == sorted(percents), out
    assert len(set(percents)) >= 3, out  # queued/fetching, processing, saving, completed
    assert "AI model is generating the image" in out
    result = re.search(r"completed: (\S+)", out)
    assert result, out
    image = httpx.get(result.group(1))
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    if capture := os.environ.get("CLI_CAPTURE"):
        Path(capture).write_text(f'$ imagejobs generate "a lighthouse at dusk" --watch\n{out}')


def test_status_projects_cancel_and_retry(stack: Stack, tenant: Tenant) -> None:
    queued = imagejobs(
        "generate", "a quiet harbour", "--size", "512x512", url=stack.url, api_key=tenant.api_key
    )
    assert queued.returncode == 0, queued.stderr
    generation_id = generation_id_of(queued.stdout)

    cancelled = imagejobs("cancel", generation_id, url=stack.url, api_key=tenant.api_key)
    assert cancelled.returncode == 0, cancelled.stderr
    assert "cancelled" in cancelled.stdout

    status = imagejobs("status", generation_id, "--json", url=stack.url, api_key=tenant.api_key)
    assert status.returncode == 0, status.stderr
    body = json.loads(status.stdout)
    assert body["id"] == generation_id
    assert body["status"] == "cancelled"
    assert body["prompt_spec"]["size"] == "512x512"

    listed = imagejobs("projects", "--json", url=stack.url, api_key=tenant.api_key)
    assert listed.returncode == 0, listed.stderr
    projects = json.loads(listed.stdout)
    assert [p["name"] for p in projects] == ["cli"]  # made by the first generate
    assert projects[0]["cancelled_count"] == 1

    # A cancelled one can be retried: it is queued again.
    retried = imagejobs("retry", generation_id, url=stack.url, api_key=tenant.api_key)
    assert retried.returncode == 0, retried.stderr
    assert f"{generation_id}  pending" in retried.stdout

    # Cancelling it again once it is done is refused with the API's reason, not a traceback.
    with httpx.Client(base_url=stack.url, headers=tenant.headers) as http:
        for _ in range(600):
            if http.get(f"/v1/generations/{generation_id}").json()["status"] == "completed":
                break
            time.sleep(0.05)
    refused = imagejobs("cancel", generation_id, url=stack.url, api_key=tenant.api_key)
    assert refused.returncode == 2
    assert "409" in refused.stderr and "cannot be cancelled" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_failed_generation_exits_1_and_retry_runs_it_again(stack: Stack, tenant: Tenant) -> None:
    # No Google key on this worker: it fails at once with the catalogue's message.
    failed = imagejobs(
        "generate", "x", "--provider", "google", "--watch", url=stack.url, api_key=tenant.api_key
    )
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "provider_error" in failed.stdout
    # The resolution is printed in full (no wrapping cuts it), next to the error.
    resolution = RESOLUTIONS[ErrorCode.PROVIDER_ERROR]
    assert f"what to do: {resolution}" in failed.stdout
    generation_id = generation_id_of(failed.stdout)
    shown = imagejobs("status", generation_id, url=stack.url, api_key=tenant.api_key)
    assert shown.returncode == 0, shown.stderr
    assert f"\n  what to do: {resolution}" in shown.stdout
    retried = imagejobs("retry", generation_id, url=stack.url, api_key=tenant.api_key)
    assert retried.returncode == 0, retried.stderr
    assert generation_id in retried.stdout


def test_clear_errors_without_tracebacks(stack: Stack, tenant: Tenant) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    unreachable = imagejobs("projects", url=closed, api_key=tenant.api_key)
    assert unreachable.returncode == 2
    assert "cannot reach the API" in unreachable.stderr

    wrong_key = imagejobs("projects", url=stack.url, api_key="ij_not-a-key")
    assert wrong_key.returncode == 2
    assert "refused the key (401)" in wrong_key.stderr

    unknown = imagejobs(
        "status", "00000000-0000-0000-0000-000000000000", url=stack.url, api_key=tenant.api_key
    )
    assert unknown.returncode == 2
    assert "404" in unknown.stderr

    rejected = imagejobs("generate", "x", "--size", "huge", url=stack.url, api_key=tenant.api_key)
    assert rejected.returncode == 2
    assert "422" in rejected.stderr and "size" in rejected.stderr

    for result in (unreachable, wrong_key, unknown, rejected):
        assert "Traceback" not in result.stderr


def admin(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """An operator's command: straight to the database, no API."""
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        env={**os.environ, "DATABASE_URL": database_url, "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def quota_row(output: str, limit: str) -> list[str]:
    line = next(line for line in output.splitlines() if line.startswith(f"{limit} "))
    return line.split()


def test_quota_set_and_show(database_url: str, tenant: Tenant) -> None:
    workspace = str(tenant.workspace_id)
    shown = admin(database_url, "quota", "show", "--workspace", workspace)
    assert shown.returncode == 0, shown.stderr
    assert quota_row(shown.stdout, "generations_per_day") == [
        "generations_per_day",
        "unlimited",
        "0",
    ]
    assert "resets at" in shown.stdout and "UTC day" in shown.stdout

    set_ = admin(
        database_url,
        "quota", "set", "--workspace", workspace,
        "--generations-per-day", "5", "--usd-per-day", "1.5", "--max-concurrency", "2",
    )  # fmt: skip
    assert set_.returncode == 0, set_.stderr
    assert quota_row(set_.stdout, "generations_per_day")[1] == "5"
    assert quota_row(set_.stdout, "usd_per_day")[1] == "1.5"
    assert quota_row(set_.stdout, "max_concurrency")[1] == "2"

    # Only the limits named change; none clears one.
    cleared = admin(database_url, "quota", "set", "--workspace", workspace, "--usd-per-day", "none")
    assert cleared.returncode == 0, cleared.stderr
    assert quota_row(cleared.stdout, "generations_per_day")[1] == "5"
    assert quota_row(cleared.stdout, "usd_per_day")[1] == "unlimited"
    assert quota_row(cleared.stdout, "max_concurrency")[1] == "2"


def test_quota_set_refuses_bad_values_without_tracebacks(database_url: str) -> None:
    workspace = "00000000-0000-0000-0000-0000000000aa"
    nothing = admin(database_url, "quota", "set", "--workspace", workspace)
    assert nothing.returncode != 0
    assert "name at least one of" in nothing.stderr
    for flag, value, said in (
        ("--generations-per-day", "-1", "must be 0 or more"),
        ("--generations-per-day", "lots", "expected an integer or none"),
        ("--usd-per-day", "nan", "must be 0 or more"),
        ("--max-concurrency", "0", "must be 1 or more"),
    ):
        refused = admin(database_url, "quota", "set", "--workspace", workspace, flag, value)
        assert refused.returncode == 2, (flag, value)
        assert said in refused.stderr, refused.stderr
    too_much = admin(database_url, "quota", "set", "--workspace", workspace, "--usd-per-day", "1e9")
    assert too_much.returncode == 1
    assert "usd_per_day must be below 1000000" in too_much.stderr
    bad_workspace = admin(database_url, "quota", "show", "--workspace", "nope")
    assert bad_workspace.returncode == 2
    for result in (nothing, too_much, bad_workspace):
        assert "Traceback" not in result.stderr


def test_generate_over_quota_says_why_and_when(
    stack: Stack, tenant: Tenant, database_url: str
) -> None:
    frozen = admin(
        database_url,
        "quota", "set", "--workspace", str(tenant.workspace_id), "--generations-per-day", "0",
    )  # fmt: skip
    assert frozen.returncode == 0, frozen.stderr
    refused = imagejobs("generate", "a kite", url=stack.url, api_key=tenant.api_key)
    assert refused.returncode == 2
    assert "429" in refused.stderr and "generations_per_day" in refused.stderr
    assert "resets at" in refused.stderr
    assert "Traceback" not in refused.stderr
