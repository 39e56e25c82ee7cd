from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from psycopg_pool import AsyncConnectionPool

from tests.conftest import Tenant

Client = AsyncTestClient[Litestar]


async def new_project(client: Client, tenant: Tenant) -> str:
    response = await client.post("/v1/projects", json={"name": "p"}, headers=tenant.headers)
    assert response.status_code == 201
    return str(response.json()["id"])


async def test_create_generation_queues_a_job(client: Client, tenant: Tenant) -> None:
    project_id = await new_project(client, tenant)
    response = await client.post(
        "/v1/generations",
        json={"project_id": project_id, "prompt": "a lighthouse at dusk", "provider": "local"},
        headers=tenant.headers,
    )
    assert response.status_code == 201
    body = response.json()
    assert response.headers["location"] == f"/v1/generations/{body['id']}"
    assert body["status"] == "pending"
    assert body["step"] == "queued"
    assert body["progress"] == 0
    assert isinstance(body["job_id"], int)
    assert body["model"] == "pillow-v1"
    assert body["metadata"]["model"] == "local:pillow-v1"

    project = (await client.get(f"/v1/projects/{project_id}", headers=tenant.headers)).json()
    assert project["image_count"] == 1
    assert project["pending_count"] == 1


@pytest.mark.parametrize(
    "extra",
    [
        {"metadata": {"editMode": "add", "maskUrl": "https://attacker.example.com/m.png"}},
        {"edit_mode": "add"},
        {"mask_url": "https://attacker.example.com/m.png"},
    ],
    ids=["metadata", "edit_mode", "mask_url"],
)
async def test_a_client_cannot_make_a_generation_an_edit(
    client: Client, tenant: Tenant, pool: AsyncConnectionPool, extra: dict[str, Any]
) -> None:
    """What the worker acts on is not the client's: metadata is stored as given and read by no
    one, and the worker's own columns are not part of the request body."""
    project_id = await new_project(client, tenant)
    response = await client.post(
        "/v1/generations",
        json={"project_id": project_id, "prompt": "a fox", **extra},
        headers=tenant.headers,
    )
    if "metadata" not in extra:
        assert response.status_code == 422, response.text  # an unknown field, named
        assert next(iter(extra)) in response.text
        return
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["edit_mode"], body["mask_url"]) == (None, None)
    assert body["metadata"]["maskUrl"] == "https://attacker.example.com/m.png"
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT task_name FROM procrastinate_jobs WHERE id = %s", (body["job_id"],)
        )
        assert await cur.fetchone() == ("generate_image",)


async def test_prompt_spec_composes_the_prompt(client: Client, tenant: Tenant) -> None:
    project_id = await new_project(client, tenant)
    spec = {
        "base_prompt": "a fox",
        "style_modifiers": ["watercolor", "soft light"],
        "size": "256x256",
        "seed": 7,
    }
    response = await client.post(
        "/v1/generations",
        json={"project_id": project_id, "prompt_spec": spec},
        headers=tenant.headers,
    )
    assert response.status_code == 201
    body = response.json()
    assert body["prompt"] == "a fox, watercolor, soft light"
    assert body["prompt_spec"] == spec


async def test_idempotency_key_returns_the_same_generation(client: Client, tenant: Tenant) -> None:
    project_id = await new_project(client, tenant)
    body = {"project_id": project_id, "prompt": "same"}
    headers = {**tenant.headers, "Idempotency-Key": "abc-123"}
    first = await client.post("/v1/generations", json=body, headers=headers)
    second = await client.post("/v1/generations", json=body, headers=headers)
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    project = (await client.get(f"/v1/projects/{project_id}", headers=tenant.headers)).json()
    assert project["image_count"] == 1


async def test_concurrent_requests_with_one_idempotency_key_create_one_generation(
    client: Client, tenant: Tenant
) -> None:
    project_id = await new_project(client, tenant)
    headers = {**tenant.headers, "Idempotency-Key": f"race-{uuid.uuid4()}"}
    responses = await asyncio.gather(
        *(
            client.post(
                "/v1/generations",
                json={"project_id": project_id, "prompt": "race"},
                headers=headers,
            )
            for _ in range(8)
        )
    )
    assert sorted(r.status_code for r in responses).count(201) == 1
    assert {r.json()["id"] for r in responses} == {responses[0].json()["id"]}
    project = (await client.get(f"/v1/projects/{project_id}", headers=tenant.headers)).json()
    assert project["image_count"] == 1


async def test_idempotency_keys_are_scoped_to_the_workspace(
    client: Client, tenant: Tenant, other_tenant: Tenant
) -> None:
    mine, theirs = await new_project(client, tenant), await new_project(client, other_tenant)
    key = {"Idempotency-Key": "shared-key"}
    a = await client.post(
        "/v1/generations",
        json={"project_id": mine, "prompt": "a"},
        headers={**tenant.headers, **key},
    )
    b = await client.post(
        "/v1/generations",
        json={"project_id": theirs, "prompt": "b"},
        headers={**other_tenant.headers, **key},
    )
    assert (a.status_code, b.status_code) == (201, 201)
    assert a.json()["id"] != b.json()["id"]


async def test_list_generations_filters_and_pages(client: Client, tenant: Tenant) -> None:
    project_id = await new_project(client, tenant)
    other_project = await new_project(client, tenant)
    ids = []
    for i in range(5):
        r = await client.post(
            "/v1/generations",
            json={"project_id": project_id, "prompt": f"g{i}"},
            headers=tenant.headers,
        )
        ids.append(r.json()["id"])
    await client.post(
        "/v1/generations",
        json={"project_id": other_project, "prompt": "elsewhere"},
        headers=tenant.headers,
    )

    seen: list[str] = []
    cursor = None
    while True:
        params = {"project_id": project_id, "limit": "2", **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/generations", params=params, headers=tenant.headers)).json()
        seen += [g["id"] for g in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))

    pending = (
        await client.get(
            "/v1/generations",
            params={"project_id": project_id, "status": "completed"},
            headers=tenant.headers,
        )
    ).json()
    assert pending["data"] == []


async def test_generations_of_another_workspace_are_404(
    client: Client, tenant: Tenant, other_tenant: Tenant
) -> None:
    project_id = await new_project(client, tenant)
    created = (
        await client.post(
            "/v1/generations",
            json={"project_id": project_id, "prompt": "x"},
            headers=tenant.headers,
        )
    ).json()
    for path in (f"/v1/generations/{created['id']}", f"/v1/generations/{created['id']}/events"):
        response = await client.get(path, headers=other_tenant.headers)
        assert response.status_code == 404, path
        assert response.headers["content-type"].startswith("application/problem+json")
    listed = (await client.get("/v1/generations", headers=other_tenant.headers)).json()
    assert created["id"] not in {g["id"] for g in listed["data"]}
    # Nor can another workspace attach generations to my project.
    response = await client.post(
        "/v1/generations",
        json={"project_id": project_id, "prompt": "intruder"},
        headers=other_tenant.headers,
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "project_id"


@pytest.mark.parametrize(
    "path",
    [
        "/v1/projects",
        "/v1/generations",
        f"/v1/generations/{uuid.uuid4()}",
        f"/v1/generations/{uuid.uuid4()}/events",
    ],
)
async def test_requests_without_a_valid_key_are_401(client: Client, path: str) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer ij_not-a-real-key"},
        {"Authorization": "Basic Zm9vOmJhcg=="},
    ):
        response = await client.get(path, headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.headers["www-authenticate"].startswith("Bearer")


BAD_GENERATION_BODIES: list[tuple[str, Any, str]] = [
    ("missing project", {"prompt": "x"}, "project_id"),
    ("project not a uuid", {"project_id": "nope", "prompt": "x"}, "project_id"),
    ("missing prompt", {"project_id": "{project}"}, "prompt"),
    ("empty prompt", {"project_id": "{project}", "prompt": ""}, "prompt"),
    ("huge prompt", {"project_id": "{project}", "prompt": "x" * 5000}, "prompt"),
    ("prompt wrong type", {"project_id": "{project}", "prompt": 42}, "prompt"),
    ("prompt with NUL", {"project_id": "{project}", "prompt": "a\u0000b"}, "prompt"),
    (
        "unknown provider",
        {"project_id": "{project}", "prompt": "x", "provider": "dalle"},
        "provider",
    ),
    ("unknown field", {"project_id": "{project}", "prompt": "x", "colour": "red"}, "colour"),
    (
        "negative seed",
        {"project_id": "{project}", "prompt_spec": {"base_prompt": "x", "seed": -1}},
        "prompt_spec.seed",
    ),
    (
        "bad size",
        {"project_id": "{project}", "prompt_spec": {"base_prompt": "x", "size": "-5x10"}},
        "prompt_spec.size",
    ),
    (
        "data url source",
        {
            "project_id": "{project}",
            "prompt": "x",
            "original_image_url": "data:image/png;base64,AAAA",
        },
        "original_image_url",
    ),
    (
        "ftp source",
        {"project_id": "{project}", "prompt": "x", "original_image_url": "ftp://example.com/a.png"},
        "original_image_url",
    ),
    (
        "bad webhook filter",
        {"project_id": "{project}", "prompt": "x", "webhook_events_filter": ["done"]},
        "webhook_events_filter",
    ),
    (
        "image bytes in metadata",
        {
            "project_id": "{project}",
            "prompt": "x",
            "metadata": {"img": "data:image/png;base64,iVBORw0KGgo="},
        },
        "body",
    ),
    ("unknown project", {"project_id": str(uuid.uuid4()), "prompt": "x"}, "project_id"),
    ("body not an object", ["x"], "body"),
]


@pytest.mark.parametrize(
    ("case", "body", "field"), BAD_GENERATION_BODIES, ids=[c[0] for c in BAD_GENERATION_BODIES]
)
async def test_bad_generation_bodies_are_422_naming_the_field(
    client: Client, tenant: Tenant, case: str, body: Any, field: str
) -> None:
    project_id = await new_project(client, tenant)
    if isinstance(body, dict) and body.get("project_id") == "{project}":
        body = {**body, "project_id": project_id}
    response = await client.post("/v1/generations", json=body, headers=tenant.headers)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert response.headers["content-type"].startswith("application/problem+json")
    assert problem["status"] == 422
    assert any(e["field"].startswith(field) for e in problem["errors"]), problem
    project = (await client.get(f"/v1/projects/{project_id}", headers=tenant.headers)).json()
    assert project["image_count"] == 0


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b'{"project_id": ', b"\xff\xfe", b""],
    ids=["syntax", "truncated", "binary", "empty"],
)
async def test_malformed_json_is_400(client: Client, tenant: Tenant, raw: bytes) -> None:
    response = await client.post(
        "/v1/generations",
        content=raw,
        headers={**tenant.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert response.json()["status"] == 400


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/generations", {"limit": "0"}),
        ("/v1/generations", {"limit": "abc"}),
        ("/v1/generations", {"cursor": "garbage!"}),
        ("/v1/generations", {"status": "done"}),
        ("/v1/generations", {"project_id": "nope"}),
        ("/v1/projects", {"limit": "1000"}),
    ],
)
async def test_bad_query_parameters_are_4xx(
    client: Client, tenant: Tenant, path: str, params: dict[str, str]
) -> None:
    response = await client.get(path, params=params, headers=tenant.headers)
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize(
    "path", ["/v1/generations/not-a-uuid", "/v1/projects/123", "/v1/generations/123/events"]
)
async def test_non_uuid_ids_are_4xx(client: Client, tenant: Tenant, path: str) -> None:
    response = await client.get(path, headers=tenant.headers)
    assert 400 <= response.status_code < 500
    assert response.json()["status"] == response.status_code


async def test_bad_project_bodies(client: Client, tenant: Tenant) -> None:
    for body, field in (
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": 3}, "name"),
    ):
        response = await client.post("/v1/projects", json=body, headers=tenant.headers)
        assert response.status_code == 422, body
        assert response.json()["errors"][0]["field"] == field


async def test_oversized_body_is_413(client: Client, tenant: Tenant) -> None:
    response = await client.post(
        "/v1/projects",
        content=b'{"name": "' + b"x" * (2 * 1024 * 1024) + b'"}',
        headers={**tenant.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["status"] == 413


async def test_health_and_schema(client: Client) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    schema = (await client.get("/schema/openapi.json")).json()
    assert "/v1/generations" in schema["paths"]
    events = schema["paths"]["/v1/generations/{generation_id}/events"]["get"]
    assert "text/event-stream" in events["responses"]["200"]["content"]


WRONGLY_EXPLAINED: list[tuple[str, dict[str, Any], str, str]] = [
    ("javascript url", {"webhook_url": "javascript:alert(1)"}, "webhook_url", "http(s) URL"),
    ("gopher url", {"original_image_url": "gopher://h/x"}, "original_image_url", "http(s) URL"),
    ("file url", {"webhook_url": "file:///etc/passwd"}, "webhook_url", "http(s) URL"),
    ("url with a space", {"webhook_url": "https://a b/"}, "webhook_url", "http(s) URL"),
    ("prompt with NUL", {"prompt": "a\u0000b"}, "prompt", "NUL"),
    ("long metadata text", {"metadata": {"note": "a" * 5000}}, "metadata.note", "too large"),
    (
        "deep metadata",
        {"metadata": {"a": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}},
        "metadata.a",
        "nested",
    ),
]


@pytest.mark.parametrize(
    ("case", "extra", "field", "cause"), WRONGLY_EXPLAINED, ids=[c[0] for c in WRONGLY_EXPLAINED]
)
async def test_each_refusal_names_its_true_cause(
    client: Client, tenant: Tenant, case: str, extra: dict[str, Any], field: str, cause: str
) -> None:
    project_id = await new_project(client, tenant)
    body = {"project_id": project_id, "prompt": "x", **extra}
    response = await client.post("/v1/generations", json=body, headers=tenant.headers)
    assert response.status_code == 422, response.text
    (error,) = response.json()["errors"]
    assert error["field"].startswith(field)
    assert cause in error["message"], error
    if cause != "NUL":
        assert "NUL" not in error["message"] and "image data" not in error["message"]
