"""The streams the dashboard follows, over plain HTTP with the key in `?access_token=` (as a
browser's EventSource sends it): the workspace's project counters and a project's generations."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.conftest import Tenant
from tests.e2e.conftest import Stack
from tests.sse_client import SSEComment, SSEEvent, read_sse

pytestmark = pytest.mark.e2e


async def project_events_until(
    stream: AsyncIterator[SSEEvent | SSEComment], done: Any, timeout: float = 30
) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        async for item in stream:
            if isinstance(item, SSEEvent) and item.event == "project":
                seen.append(json.loads(item.data))
                if done(seen[-1]):
                    return seen
    raise AssertionError(f"the stream ended early: {seen}")


async def test_workspace_stream_sends_every_project_then_each_counter_change(
    stack: Stack, tenant: Tenant
) -> None:
    async with httpx.AsyncClient(base_url=stack.url, headers=tenant.headers, timeout=30) as http:
        first = (await http.post("/v1/projects", json={"name": "first"})).json()
        second = (await http.post("/v1/projects", json={"name": "second"})).json()
    # No Authorization header: the key travels in the query, as from EventSource.
    async with (
        httpx.AsyncClient(base_url=stack.url, timeout=30) as browser_like,
        browser_like.stream(
            "GET", "/v1/projects/events", params={"access_token": tenant.api_key}
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = read_sse(response)
        initial = await project_events_until(stream, lambda p: p["id"] == second["id"])
        # Every project of the workspace first, oldest first, as full rows.
        assert [p["id"] for p in initial] == [first["id"], second["id"]]
        assert initial[0]["name"] == "first"

        async with httpx.AsyncClient(
            base_url=stack.url, headers=tenant.headers, timeout=30
        ) as http:
            created = await http.post(
                "/v1/generations", json={"project_id": first["id"], "prompt": "a red kite"}
            )
            assert created.status_code == 201
        changes = await project_events_until(stream, lambda p: p["completed_count"] == 1)
        assert {p["project_id"] for p in changes} == {first["id"]}
        assert changes[-1]["status"] == "completed"
        assert changes[-1]["image_count"] == 1


async def test_another_workspace_sees_none_of_it(
    stack: Stack, tenant: Tenant, other_tenant: Tenant
) -> None:
    async with httpx.AsyncClient(base_url=stack.url, headers=tenant.headers, timeout=30) as http:
        mine = (await http.post("/v1/projects", json={"name": "mine"})).json()
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as client:
        foreign = await client.get(
            f"/v1/projects/{mine['id']}/events", params={"access_token": other_tenant.api_key}
        )
        assert foreign.status_code == 404
        async with client.stream(
            "GET", "/v1/projects/events", params={"access_token": other_tenant.api_key}
        ) as response:
            assert response.status_code == 200
            # The other workspace has no project: the stream only keeps itself alive.
            async with asyncio.timeout(3):
                async for item in read_sse(response):
                    assert not isinstance(item, SSEEvent), item
                    break
