"""Request limits: creation rate per key (shared through Postgres), body size, prompt length,
concurrent SSE streams per key, and the CORS allow-list."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from litestar import Litestar
from litestar.testing import AsyncTestClient

from api.app import create_app
from api.auth.keys import Principal
from api.limits import limit_subject
from tests.api.conftest import WEBHOOK_SECRET, Jwks
from tests.conftest import Tenant
from tests.emulators.server import _free_port
from worker.core.config import load_settings

Client = AsyncTestClient[Litestar]
RATE_HEADERS = ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "ratelimit-policy")


def make_app(database_url: str, tmp_path: Path, jwks: Jwks, **env: str) -> Litestar:
    settings = load_settings(
        {
            "DATABASE_URL": database_url,
            "LOCAL_STORAGE_DIR": str(tmp_path / "storage"),
            "WEBHOOK_SECRET": WEBHOOK_SECRET,
            "FAL_JWKS_URL": jwks.url,
            **env,
        }
    )
    return create_app(settings)


@pytest.fixture
async def limited(database_url: str, tmp_path: Path, jwks: Jwks) -> AsyncIterator[Client]:
    app = make_app(database_url, tmp_path, jwks, RATE_LIMIT_CREATE_PER_MIN="3")
    async with AsyncTestClient(app=app) as client:
        yield client


def test_limits_count_the_key_else_the_user_else_the_workspace() -> None:
    workspace, key, user = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    assert limit_subject(Principal(workspace, key_id=key, user_id=user)) == f"key:{key}"
    assert limit_subject(Principal(workspace, user_id=user)) == f"user:{user}"
    assert limit_subject(Principal(workspace)) == f"workspace:{workspace}"


async def away_from_a_window_edge() -> None:
    """Windows are aligned on the minute (the database's clock, this machine's too): start a
    sequence that must fit in one window with a few seconds to spare."""
    second = time.time() % 60
    if second > 54:
        await asyncio.sleep(60.2 - second)


async def new_project(client: Client, tenant: Tenant) -> str:
    response = await client.post("/v1/projects", json={"name": "p"}, headers=tenant.headers)
    assert response.status_code == 201
    return str(response.json()["id"])


async def create(client: Client, tenant: Tenant, project_id: str) -> httpx.Response:
    return await client.post(
        "/v1/generations",
        json={"project_id": project_id, "prompt": "a kite"},
        headers=tenant.headers,
    )


async def test_creation_is_limited_per_key_with_rate_headers(
    limited: Client, tenant: Tenant, other_tenant: Tenant
) -> None:
    project_id = await new_project(limited, tenant)
    await away_from_a_window_edge()
    remaining = []
    for _ in range(3):
        response = await create(limited, tenant, project_id)
        assert response.status_code == 201
        assert all(name in response.headers for name in RATE_HEADERS)
        assert response.headers["ratelimit-limit"] == "3"
        assert response.headers["ratelimit-policy"] == "3;w=60"
        remaining.append(int(response.headers["ratelimit-remaining"]))
    assert remaining == [2, 1, 0]

    refused = await create(limited, tenant, project_id)
    assert refused.status_code == 429
    assert refused.headers["content-type"].startswith("application/problem+json")
    problem = refused.json()
    assert problem["status"] == 429
    assert problem["code"] == "rate_limited"
    retry_after = int(refused.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert refused.headers["ratelimit-remaining"] == "0"
    assert refused.headers["ratelimit-reset"] == str(retry_after)

    # Another key has its own budget, and reads are never counted.
    other_project = await new_project(limited, other_tenant)
    assert (await create(limited, other_tenant, other_project)).status_code == 201
    listed = await limited.get("/v1/generations", headers=tenant.headers)
    assert listed.status_code == 200
    assert "ratelimit-limit" not in listed.headers


async def test_retries_and_invalid_bodies_count_and_carry_headers(
    limited: Client, tenant: Tenant
) -> None:
    project_id = await new_project(limited, tenant)
    invalid = await limited.post(
        "/v1/generations", json={"project_id": project_id, "prompt": ""}, headers=tenant.headers
    )
    assert invalid.status_code == 422
    assert invalid.headers["ratelimit-limit"] == "3"
    created = (await create(limited, tenant, project_id)).json()
    retry = await limited.post(f"/v1/generations/{created['id']}/retry", headers=tenant.headers)
    assert retry.status_code == 409
    assert retry.headers["ratelimit-limit"] == "3"


async def test_the_counter_is_shared_by_every_instance(
    database_url: str, tmp_path: Path, jwks: Jwks, tenant: Tenant
) -> None:
    apps = [make_app(database_url, tmp_path, jwks, RATE_LIMIT_CREATE_PER_MIN="4") for _ in range(2)]
    async with AsyncTestClient(app=apps[0]) as first, AsyncTestClient(app=apps[1]) as second:
        project_id = await new_project(first, tenant)
        await away_from_a_window_edge()
        statuses = []
        for _ in range(3):
            statuses.append((await create(first, tenant, project_id)).status_code)
            statuses.append((await create(second, tenant, project_id)).status_code)
    # Six requests, alternating instances, against one budget of four.
    assert statuses == [201, 201, 201, 201, 429, 429]


async def test_zero_disables_the_rate_limit(
    database_url: str, tmp_path: Path, jwks: Jwks, tenant: Tenant
) -> None:
    app = make_app(database_url, tmp_path, jwks, RATE_LIMIT_CREATE_PER_MIN="0")
    async with AsyncTestClient(app=app) as client:
        project_id = await new_project(client, tenant)
        for _ in range(5):
            response = await create(client, tenant, project_id)
            assert response.status_code == 201
            assert "ratelimit-limit" not in response.headers


async def test_an_oversized_body_is_a_413_problem(client: Client, tenant: Tenant) -> None:
    body = b'{"name": "' + b"x" * (1024 * 1024 + 10) + b'"}'
    response = await client.post(
        "/v1/projects",
        content=body,
        headers={**tenant.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["status"] == 413


@pytest.mark.parametrize(
    ("field", "body"),
    [
        ("prompt", {"prompt": "x" * 4001}),
        ("prompt_spec.base_prompt", {"prompt_spec": {"base_prompt": "x" * 4001}}),
    ],
)
async def test_a_too_long_prompt_names_the_field(
    client: Client, tenant: Tenant, field: str, body: dict[str, object]
) -> None:
    project_id = await new_project(client, tenant)
    response = await client.post(
        "/v1/generations", json={"project_id": project_id, **body}, headers=tenant.headers
    )
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    errors = response.json()["errors"]
    assert [e["field"] for e in errors] == [field]
    assert "4000" in errors[0]["message"]


@pytest.fixture
def served(database_url: str, tmp_path: Path, jwks: Jwks) -> Iterator[str]:
    """The API on a real port (streams need a real disconnect), two streams per key."""
    app = make_app(database_url, tmp_path, jwks, SSE_MAX_STREAMS_PER_KEY="2", SSE_KEEPALIVE_S="1")
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline, "the API did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=15)


async def test_concurrent_streams_are_limited_per_key_and_released_on_disconnect(
    served: str, tenant: Tenant, other_tenant: Tenant
) -> None:
    async with httpx.AsyncClient(base_url=served, headers=tenant.headers, timeout=10) as http:
        project_id = (await http.post("/v1/projects", json={"name": "p"})).json()["id"]
        path = f"/v1/projects/{project_id}/events"
        first = await http.send(http.build_request("GET", path), stream=True)
        second = await http.send(http.build_request("GET", path), stream=True)
        assert first.status_code == second.status_code == 200

        refused = await http.get(path)
        assert refused.status_code == 429
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["code"] == "too_many_streams"
        assert "retry-after" in refused.headers
        # Every stream route counts, the workspace's project list included.
        assert (await http.get("/v1/projects/events")).status_code == 429

        async with httpx.AsyncClient(base_url=served, headers=other_tenant.headers) as other:
            other_project = (await other.post("/v1/projects", json={"name": "p"})).json()["id"]
            async with other.stream("GET", f"/v1/projects/{other_project}/events") as theirs:
                assert theirs.status_code == 200

        await first.aclose()
        # The server notices the disconnect at its next write (keepalive every second).
        deadline = time.monotonic() + 10
        while True:
            third = await http.send(http.build_request("GET", path), stream=True)
            if third.status_code == 200:
                break
            await third.aclose()
            assert time.monotonic() < deadline, "the closed stream's slot was never released"
            await asyncio.sleep(0.2)
        await third.aclose()
        await second.aclose()


@pytest.mark.parametrize(
    ("env", "origin", "allowed"),
    [
        (
            {"CORS_ORIGINS": "https://app.example.com, https://admin.example.com"},
            "https://app.example.com",
            True,
        ),
        ({"CORS_ORIGINS": "https://app.example.com"}, "https://evil.example.net", False),
        ({}, "https://anything.example.org", True),
        ({"APP_ENV": "production"}, "https://app.example.com", False),
    ],
)
async def test_cors_preflight_follows_the_allow_list(
    database_url: str,
    tmp_path: Path,
    jwks: Jwks,
    env: dict[str, str],
    origin: str,
    allowed: bool,
) -> None:
    app = make_app(database_url, tmp_path, jwks, **env)
    async with AsyncTestClient(app=app) as client:
        response = await client.options(
            "/v1/generations",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
    granted = response.headers.get("access-control-allow-origin")
    if allowed:
        assert response.status_code in (200, 204)
        assert granted in (origin, "*")
        assert "POST" in response.headers["access-control-allow-methods"]
    else:
        assert granted is None
