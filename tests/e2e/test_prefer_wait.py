"""`Prefer: wait=N` on creation, against real API and worker processes (Replicate's semantics:
the finished generation within N seconds, else its state then; hanging up cancels nothing)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.conftest import Tenant
from tests.e2e.conftest import Stack
from tests.e2e.test_lifecycle import create_project, wait_for

pytestmark = pytest.mark.e2e
STACK_ENV = {"LOCAL_PROVIDER_DELAY_MS": "1500"}


def body(project_id: str, prompt: str) -> dict[str, Any]:
    return {"project_id": project_id, "prompt": prompt, "prompt_spec": {"size": "64x64"}}


async def test_wait_answers_with_the_finished_generation(http: httpx.AsyncClient) -> None:
    project_id = await create_project(http)
    started = time.monotonic()
    response = await http.post(
        "/v1/generations", json=body(project_id, "waited for"), headers={"Prefer": "wait=30"}
    )
    elapsed = time.monotonic() - started
    assert response.status_code == 201, response.text
    assert response.headers["preference-applied"] == "wait=30"
    generation = response.json()
    assert generation["status"] == "completed" and generation["result_image_url"]
    assert elapsed < 30
    assert response.headers["location"] == f"/v1/generations/{generation['id']}"


async def test_a_short_wait_answers_with_the_current_state(http: httpx.AsyncClient) -> None:
    project_id = await create_project(http)
    response = await http.post(
        "/v1/generations",
        json=body(project_id, "not done yet"),
        headers={"Prefer": "respond-async, wait=1"},
    )
    assert response.status_code == 201
    assert "preference-applied" not in response.headers
    assert response.json()["status"] in ("pending", "processing")
    await wait_for(http, response.json()["id"], "completed")


async def test_hanging_up_cancels_only_the_wait(stack: Stack, tenant: Tenant) -> None:
    async with httpx.AsyncClient(base_url=stack.url, headers=tenant.headers, timeout=30) as http:
        project_id = await create_project(http)
    impatient = httpx.AsyncClient(base_url=stack.url, headers=tenant.headers, timeout=0.5)
    async with impatient:
        with pytest.raises(httpx.TimeoutException):
            await impatient.post(
                "/v1/generations",
                json=body(project_id, "left behind"),
                headers={"Prefer": "wait=60"},
            )
    async with httpx.AsyncClient(base_url=stack.url, headers=tenant.headers, timeout=30) as http:
        listed = (await http.get(f"/v1/generations?project_id={project_id}")).json()["data"]
        assert len(listed) == 1
        done = await wait_for(http, listed[0]["id"], "completed")
    assert done["result_image_url"]


async def test_an_idempotent_repeat_waits_too(http: httpx.AsyncClient) -> None:
    project_id = await create_project(http)
    headers = {"Idempotency-Key": f"wait-{time.time_ns()}"}
    first = await http.post("/v1/generations", json=body(project_id, "once"), headers=headers)
    again = await http.post(
        "/v1/generations",
        json=body(project_id, "once"),
        headers={**headers, "Prefer": "wait=30"},
    )
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["status"] == "completed"
    assert again.headers["preference-applied"] == "wait=30"


@pytest.mark.parametrize("prefer", ["wait=61", "wait=abc", "wait=-1", "wait=", "wait=1.5"])
async def test_a_bad_wait_is_a_problem_on_the_header(http: httpx.AsyncClient, prefer: str) -> None:
    project_id = await create_project(http)
    response = await http.post(
        "/v1/generations", json=body(project_id, "never made"), headers={"Prefer": prefer}
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "Prefer"
    listed = (await http.get(f"/v1/generations?project_id={project_id}")).json()["data"]
    assert listed == []
