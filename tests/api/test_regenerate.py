"""POST /v1/generations/{id}/regenerate and the error resolutions, through the API (no worker)."""

from __future__ import annotations

import asyncio
import uuid

import httpx
from litestar import Litestar
from litestar.testing import AsyncTestClient
from psycopg_pool import AsyncConnectionPool

from tests.api.test_actions import new_generation
from tests.api.test_resume import first_events
from tests.conftest import Tenant
from worker.core.errors import RESOLUTIONS, ErrorCode

Client = AsyncTestClient[Litestar]


async def test_regenerate_makes_the_next_version_on_the_same_node(
    client: Client, tenant: Tenant
) -> None:
    workflow = str(uuid.uuid4())
    first = await new_generation(
        client,
        tenant,
        workflow_id=workflow,
        node_id="hero",
        prompt_spec={"base_prompt": "a fox", "size": "512x512"},
        metadata={"from": "canvas"},
    )
    response = await client.post(
        f"/v1/generations/{first['id']}/regenerate", headers=tenant.headers
    )
    assert response.status_code == 201, response.text
    second = response.json()
    assert response.headers["location"] == f"/v1/generations/{second['id']}"
    assert (second["version"], second["parent_id"]) == (2, first["id"])
    assert (second["workflow_id"], second["node_id"]) == (workflow, "hero")
    assert (second["prompt"], second["prompt_spec"]) == (first["prompt"], first["prompt_spec"])
    assert second["metadata"]["from"] == "canvas"
    assert second["metadata"]["regeneratedFrom"] == first["id"]
    assert second["status"] == "pending" and second["job_id"] is not None

    # Regenerating any version continues the same history; the older one was superseded.
    third = await client.post(
        f"/v1/generations/{first['id']}/regenerate",
        json={"prompt": "a fox in the snow"},
        headers=tenant.headers,
    )
    assert third.status_code == 201
    assert (third.json()["version"], third.json()["prompt"]) == (3, "a fox in the snow")
    superseded = (
        await client.get(f"/v1/generations/{second['id']}", headers=tenant.headers)
    ).json()
    assert superseded["status"] == "cancelled"
    assert superseded["error_resolution"] == RESOLUTIONS[ErrorCode.CANCELLED]


async def test_regenerate_with_a_new_spec_or_provider(client: Client, tenant: Tenant) -> None:
    first = await new_generation(client, tenant, provider="local", model="local-v1")
    spec = await client.post(
        f"/v1/generations/{first['id']}/regenerate",
        json={"prompt_spec": {"base_prompt": "a heron", "style_modifiers": ["ink"]}},
        headers=tenant.headers,
    )
    assert spec.status_code == 201, spec.text
    assert spec.json()["prompt"].startswith("a heron")
    assert spec.json()["model"] == "local-v1"

    provider = await client.post(
        f"/v1/generations/{first['id']}/regenerate",
        json={"provider": "openai"},
        headers=tenant.headers,
    )
    assert provider.status_code == 201, provider.text
    models = (await client.get("/v1/models", headers=tenant.headers)).json()["data"]
    default = next(m["model"] for m in models if m["provider"] == "openai" and m["default"])
    assert (provider.json()["provider"], provider.json()["model"]) == ("openai", default)


async def test_regenerate_refuses_bad_input_with_the_field_at_fault(
    client: Client, tenant: Tenant
) -> None:
    first = await new_generation(client, tenant)
    path = f"/v1/generations/{first['id']}/regenerate"
    cases = [
        ({"provider": "midjourney"}, "provider"),
        ({"provider": "nobody"}, "provider"),
        ({"prompt_spec": {"size": "64x64"}}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"seed": 3}, "seed"),
    ]
    for body, field in cases:
        response = await client.post(path, json=body, headers=tenant.headers)
        assert response.status_code in (400, 422), (body, response.text)
        assert field in response.text, (body, response.text)
    not_json = await client.post(
        path, content=b"{", headers={**tenant.headers, "content-type": "application/json"}
    )
    assert not_json.status_code == 400


async def test_concurrent_regenerates_of_one_root_get_distinct_versions(
    client: Client, tenant: Tenant
) -> None:
    root = await new_generation(client, tenant)
    responses = await asyncio.gather(
        *(
            client.post(f"/v1/generations/{root['id']}/regenerate", headers=tenant.headers)
            for _ in range(20)
        )
    )
    assert all(r.status_code == 201 for r in responses), [r.text for r in responses]
    versions = (
        await client.get(f"/v1/generations/{root['id']}/versions", headers=tenant.headers)
    ).json()["data"]
    assert sorted(v["version"] for v in versions) == list(range(1, 22))


async def test_every_error_code_returns_its_resolution(
    client: Client, tenant: Tenant, pool: AsyncConnectionPool
) -> None:
    for code in ErrorCode:
        generation = await new_generation(client, tenant)
        async with pool.connection() as conn:
            await conn.execute(
                "UPDATE image_generations SET status = 'failed', error_code = %s WHERE id = %s",
                (code.value, generation["id"]),
            )
        body = (
            await client.get(f"/v1/generations/{generation['id']}", headers=tenant.headers)
        ).json()
        assert (body["error_code"], body["error_resolution"]) == (code.value, RESOLUTIONS[code])
    pending = await new_generation(client, tenant)
    assert pending["error_resolution"] is None and pending["thumbnail_url"] is None


async def test_the_generation_stream_carries_the_resolution(
    api_url: str, tenant: Tenant, pool: AsyncConnectionPool
) -> None:
    async with httpx.AsyncClient(base_url=api_url, headers=tenant.headers, timeout=30) as http:
        project = (await http.post("/v1/projects", json={"name": "stream"})).json()
        created = await http.post(
            "/v1/generations", json={"project_id": project["id"], "prompt": "x"}
        )
        generation_id = created.json()["id"]
        async with pool.connection() as conn:
            await conn.execute(
                "UPDATE image_generations SET status = 'failed', error_code = 'no_result'"
                " WHERE id = %s",
                (generation_id,),
            )
        events, ended = await first_events(http, f"/v1/generations/{generation_id}/events", {}, 5)
    assert ended
    terminal = events[-1].json()
    assert (terminal["status"], terminal["error_code"], terminal["error_resolution"]) == (
        "failed",
        "no_result",
        RESOLUTIONS[ErrorCode.NO_RESULT],
    )
