"""Odd input answers a 4xx problem-details JSON naming the field at fault, never a 500: deep
nesting, NUL bytes in paths, validly signed webhooks whose payloads have unexpected shapes."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from psycopg_pool import AsyncConnectionPool

from tests.api.conftest import Jwks
from tests.api.test_webhooks import fal_headers, processing_generation, signed
from tests.conftest import Tenant

Client = AsyncTestClient[Litestar]


def assert_problem(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem: dict[str, Any] = response.json()
    if field is not None:
        assert field in [e["field"] for e in problem.get("errors", [])], problem
    return problem


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


async def test_deeply_nested_json_is_a_400(
    client: Client, tenant: Tenant, project_id: uuid.UUID, caplog: pytest.LogCaptureFixture
) -> None:
    body = b'{"project_id": "%s", "prompt": "x", "metadata": {"a": %s}}' % (
        str(project_id).encode(),
        nested(1000),
    )
    response = await client.post(
        "/v1/generations",
        content=body,
        headers=tenant.headers | {"content-type": "application/json"},
    )
    assert_problem(response, 400, "body")
    assert "Traceback" not in caplog.text


async def test_deeply_nested_signed_webhook_is_a_400(client: Client) -> None:
    body = b'{"type": "image.generation.status", "data": %s}' % nested(1000)
    response = await client.post("/v1/webhooks/generic", content=body, headers=signed(body))
    assert_problem(response, 400, "body")


@pytest.mark.parametrize("path", ["/files/%00", "/files/a%00b.png", "/files/%C0%AE"])
async def test_odd_file_paths_are_4xx(client: Client, path: str) -> None:
    response = await client.get(path)
    assert 400 <= response.status_code < 500, response.text


async def test_nul_and_non_ascii_in_headers_are_4xx(client: Client, tenant: Tenant) -> None:
    for value in ("Bearer ij_\x00abc", "Bearer ij_\u00e9t\u00e9", "Bearer \u00ff" * 300):
        response = await client.get("/v1/projects", headers={b"Authorization": value.encode()})
        assert_problem(response, 401)
    for workspace in ("\u00e9\x00", "\x00" * 40):
        response = await client.get(
            "/v1/projects",
            headers={
                **{k.encode(): v.encode() for k, v in tenant.headers.items()},
                b"X-Workspace-Id": workspace.encode(),
            },
        )
        assert 400 <= response.status_code < 500, response.text


async def test_signed_payloads_with_nul_characters_are_422(client: Client) -> None:
    body = generic({"job_id": "j", "status": "completed", "note": "a\u0000b"})
    response = await client.post("/v1/webhooks/generic", content=body, headers=signed(body))
    assert_problem(response, 422, "body")


def generic(data: Any) -> bytes:
    return json.dumps({"type": "image.generation.status", "data": data}).encode()


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ("completed", "data"),
        ([{"status": "completed"}], "data"),
        ({"job_id": "j", "status": ["completed"]}, "data.status"),
        ({"job_id": "j", "status": {"a": 1}}, "data.status"),
        ({"job_id": {"a": 1}, "status": "completed"}, "data.job_id"),
        ({"job_id": ["j"], "status": "completed"}, "data.job_id"),
        ({"job_id": "j", "status": "completed", "images": 7}, "data.images"),
        ({"job_id": "j", "status": "completed", "images": "abc"}, "data.images"),
        ({"job_id": "j", "status": "completed", "images": [{"url": 5}]}, "data.images[0].url"),
        ({"job_id": "j", "status": "failed", "error": {"a": 1}}, "data.error"),
        ({"job_id": "j" * 5000, "status": "completed"}, "data.job_id"),
    ],
)
async def test_odd_generic_payloads_are_422(client: Client, data: Any, field: str) -> None:
    body = generic(data)
    response = await client.post("/v1/webhooks/generic", content=body, headers=signed(body))
    assert_problem(response, 422, field)


async def test_a_long_webhook_id_is_a_400(client: Client) -> None:
    body = generic({"job_id": "j", "status": "completed"})
    response = await client.post(
        "/v1/webhooks/generic", content=body, headers=signed(body, msg_id="m" * 5000)
    )
    assert_problem(response, 400, "webhook-id")


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"status": "OK", "payload": ["a", "b"]}, "payload"),
        ({"status": "OK", "payload": "images"}, "payload"),
        ({"status": "ERROR", "payload": ["detail"]}, "payload"),
        ({"status": "ERROR", "payload": "boom"}, "payload"),
        ({"status": "OK", "request_id": 12345, "payload": {}}, "request_id"),
        ({"status": "OK", "request_id": {"id": "x"}, "payload": {}}, "request_id"),
        ({"status": ["OK"], "payload": {}}, "status"),
        ({"status": "ERROR", "error": ["x"]}, "error"),
    ],
)
async def test_odd_fal_payloads_are_422(
    client: Client,
    tenant: Tenant,
    pool: AsyncConnectionPool,
    jwks: Jwks,
    payload: dict[str, Any],
    field: str,
) -> None:
    _, job_id = await processing_generation(pool, tenant)
    body = json.dumps({"request_id": job_id, **payload}).encode()
    response = await client.post(
        "/v1/webhooks/fal", content=body, headers=fal_headers(jwks.keys[0], body, request_id=job_id)
    )
    assert_problem(response, 422, field)


async def test_a_long_fal_request_id_is_a_400(client: Client, jwks: Jwks) -> None:
    request_id = "r" * 5000
    body = json.dumps({"request_id": request_id, "status": "OK", "payload": {}}).encode()
    response = await client.post(
        "/v1/webhooks/fal",
        content=body,
        headers=fal_headers(jwks.keys[0], body, request_id=request_id),
    )
    assert_problem(response, 400, "x-fal-webhook-request-id")
