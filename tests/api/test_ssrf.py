"""The API refuses URLs the worker would never fetch, when it can tell without DNS."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from api.problems import InvalidField
from api.routes.generations import refuse_unsafe_urls
from api.schemas import GenerationCreate
from tests.conftest import Tenant
from worker.core.config import load_settings
from worker.core.netguard import OutboundPolicy

Client = AsyncTestClient[Litestar]


async def post_generation(
    client: Client, tenant: Tenant, **fields: str
) -> tuple[int, dict[str, Any]]:
    project = await client.post("/v1/projects", json={"name": "p"}, headers=tenant.headers)
    body = {"project_id": project.json()["id"], "prompt": "x", **fields}
    response = await client.post("/v1/generations", json=body, headers=tenant.headers)
    return response.status_code, response.json()


@pytest.mark.parametrize(
    ("field", "url", "reason"),
    [
        (
            "original_image_url",
            "http://169.254.169.254/latest/meta-data",
            "169.254.169.254 is a cloud metadata address",
        ),
        ("original_image_url", "https://10.0.0.7/a.png", "10.0.0.7 is a private address"),
        ("webhook_url", "http://[::ffff:192.168.0.1]/hook", "is a private address"),
        ("webhook_url", "http://0.0.0.0:8080/hook", "0.0.0.0 is an unspecified address"),
    ],
)
async def test_a_literal_internal_address_is_422_naming_the_field(
    client: Client, tenant: Tenant, field: str, url: str, reason: str
) -> None:
    status, problem = await post_generation(client, tenant, **{field: url})
    assert status == 422, problem
    errors = problem["errors"]
    assert errors[0]["field"] == field
    assert errors[0]["message"].startswith("refused: ") and reason in errors[0]["message"]


async def test_loopback_http_is_accepted_in_development(client: Client, tenant: Tenant) -> None:
    status, created = await post_generation(
        client,
        tenant,
        original_image_url="http://127.0.0.1:9/a.png",
        webhook_url="http://localhost:9/hook",
    )
    assert status == 201, created
    assert created["original_image_url"] == "http://127.0.0.1:9/a.png"


@pytest.mark.parametrize(
    ("field", "url", "reason"),
    [
        ("original_image_url", "http://cdn.example.com/a.png", "only https URLs are allowed"),
        ("webhook_url", "http://hooks.example.com/x", "only https URLs are allowed"),
        ("webhook_url", "https://127.0.0.1/hook", "127.0.0.1 is a loopback address"),
    ],
)
def test_production_refuses_plain_http_and_loopback(field: str, url: str, reason: str) -> None:
    policy = OutboundPolicy.from_settings(load_settings({"APP_ENV": "production"}))
    body = msgspec.convert(
        {"project_id": str(uuid.uuid4()), "prompt": "x", field: url}, GenerationCreate
    )
    with pytest.raises(InvalidField) as caught:
        refuse_unsafe_urls(body, policy)
    assert caught.value.status_code == 422
    assert caught.value.extra == [{"key": field, "message": f"refused: {reason}"}]
    fine = msgspec.structs.replace(body, **{field: "https://cdn.example.com/a.png"})
    refuse_unsafe_urls(fine, policy)  # no exception
