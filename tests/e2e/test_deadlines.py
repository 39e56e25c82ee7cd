"""Deadlines (`deadline_s`, `Cancel-After`), delayed starts (`run_at`) and queue positions,
against real API and worker processes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Stack
from tests.e2e.test_lifecycle import create_project, wait_for

pytestmark = pytest.mark.e2e
# Slower than the deadlines below: the worker is mid-generation when they pass.
STACK_ENV = {"LOCAL_PROVIDER_DELAY_MS": "4000"}


def body(project_id: str, **extra: Any) -> dict[str, Any]:
    return {"project_id": project_id, "prompt": "against the clock", **extra}


@pytest.mark.parametrize(
    ("extra", "headers"),
    [
        ({"deadline_s": 1}, {}),
        ({}, {"Cancel-After": "1s"}),
        ({"deadline_s": 600}, {"Cancel-After": "1"}),
    ],
)
async def test_a_generation_not_done_by_its_deadline_fails_with_timeout(
    http: httpx.AsyncClient, stack: Stack, extra: dict[str, Any], headers: dict[str, str]
) -> None:
    project_id = await create_project(http)
    created = await http.post("/v1/generations", json=body(project_id, **extra), headers=headers)
    assert created.status_code == 201, created.text
    generation = created.json()
    deadline = datetime.fromisoformat(generation["deadline_at"])
    assert (
        timedelta(0)
        < deadline - datetime.fromisoformat(generation["created_at"])
        <= timedelta(seconds=2)
    )
    await wait_for(http, generation["id"], "processing")
    failed = await wait_for(http, generation["id"], "failed", timeout=20)
    assert failed["error_code"] == "timeout"
    assert failed["error_message"].startswith("Not finished by its deadline")
    assert failed["error_resolution"]
    await asyncio.sleep(4.5)  # past the provider's 4 s: a late finisher would have written
    final = (await http.get(f"/v1/generations/{generation['id']}")).json()
    assert (final["status"], final["result_image_url"]) == ("failed", None)
    assert not list(stack.storage.rglob(f"{generation['id']}*")), "nothing stored after it"


async def test_run_at_delays_the_start(http: httpx.AsyncClient) -> None:
    project_id = await create_project(http)
    run_at = datetime.now(UTC) + timedelta(seconds=3)
    created = await http.post(
        "/v1/generations", json=body(project_id, run_at=run_at.isoformat(), deadline_s=60)
    )
    assert created.status_code == 201, created.text
    generation = created.json()
    await asyncio.sleep(1.5)
    waiting = (await http.get(f"/v1/generations/{generation['id']}")).json()
    assert waiting["status"] == "pending"
    done = await wait_for(http, generation["id"], "completed", timeout=30)
    assert datetime.fromisoformat(done["started_at"]) >= run_at
    # The deadline counts from run_at.
    assert datetime.fromisoformat(done["deadline_at"]) >= run_at + timedelta(seconds=59)


@pytest.mark.parametrize(
    ("headers", "extra", "field"),
    [
        ({"Cancel-After": "soon"}, {}, "Cancel-After"),
        ({"Cancel-After": "0s"}, {}, "Cancel-After"),
        ({"Cancel-After": "9999h"}, {}, "Cancel-After"),
        ({}, {"deadline_s": 0}, "deadline_s"),
        ({}, {"run_at": "2026-12-04T10:00:00"}, "run_at"),
        ({}, {"run_at": "2099-01-01T00:00:00Z"}, "run_at"),
    ],
)
async def test_bad_deadlines_and_starts_name_their_field(
    http: httpx.AsyncClient, headers: dict[str, str], extra: dict[str, Any], field: str
) -> None:
    project_id = await create_project(http)
    response = await http.post("/v1/generations", json=body(project_id, **extra), headers=headers)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == field
