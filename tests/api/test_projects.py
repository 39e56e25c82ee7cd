from __future__ import annotations

import uuid

from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import Tenant


async def test_create_and_get_project(client: AsyncTestClient[Litestar], tenant: Tenant) -> None:
    created = await client.post("/v1/projects", json={"name": "demo"}, headers=tenant.headers)
    assert created.status_code == 201
    body = created.json()
    assert body["name"] == "demo"
    assert body["workspace_id"] == str(tenant.workspace_id)
    assert body["status"] == "pending"
    assert body["image_count"] == 0

    fetched = await client.get(f"/v1/projects/{body['id']}", headers=tenant.headers)
    assert fetched.status_code == 200
    assert fetched.json()["id"] == body["id"]


async def test_list_projects_pages_newest_first(
    client: AsyncTestClient[Litestar], tenant: Tenant
) -> None:
    names = [f"p{i}" for i in range(5)]
    for name in names:
        assert (
            await client.post("/v1/projects", json={"name": name}, headers=tenant.headers)
        ).status_code == 201

    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/projects", params=params, headers=tenant.headers)).json()
        seen += [p["name"] for p in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(names))


async def test_projects_of_another_workspace_are_invisible(
    client: AsyncTestClient[Litestar],
    tenant: Tenant,
    other_tenant: Tenant,
) -> None:
    created = (
        await client.post("/v1/projects", json={"name": "mine"}, headers=tenant.headers)
    ).json()
    foreign = await client.get(f"/v1/projects/{created['id']}", headers=other_tenant.headers)
    assert foreign.status_code == 404
    assert foreign.headers["content-type"].startswith("application/problem+json")
    listed = (await client.get("/v1/projects", headers=other_tenant.headers)).json()
    assert listed["data"] == []


async def test_unknown_project_is_404(client: AsyncTestClient[Litestar], tenant: Tenant) -> None:
    response = await client.get(f"/v1/projects/{uuid.uuid4()}", headers=tenant.headers)
    assert response.status_code == 404
    assert response.json()["status"] == 404
