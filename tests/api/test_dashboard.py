"""The dashboard page and its assets over plain HTTP, and the narrow `?access_token=` rule."""

from __future__ import annotations

import re
import uuid

from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import Tenant


async def test_root_serves_the_dashboard_html_with_a_strict_csp(
    client: AsyncTestClient[Litestar],
) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    csp = response.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["script-src"] == "'self'"
    assert directives["default-src"] == "'none'"
    assert "'unsafe-inline'" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    html = response.text
    # No inline script or style: everything comes from the assets the CSP allows.
    assert re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html) is None
    assert "style=" not in html
    assert '<script src="/dashboard/app.js"' in html


async def test_dashboard_assets_are_served_with_their_types(
    client: AsyncTestClient[Litestar],
) -> None:
    script = await client.get("/dashboard/app.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert "EventSource" in script.text
    # User data reaches the DOM as text only.
    assert "innerHTML" not in script.text
    # Positions are set through the CSSOM (allowed by style-src 'self'), never as a style
    # attribute (which the CSP would block).
    assert 'setAttribute("style"' not in script.text and ".cssText" not in script.text
    # The canvas follows the workflow stream with the key the other streams use.
    assert "sseUrl(`/v1/workflows/" in script.text
    style = await client.get("/dashboard/style.css")
    assert style.status_code == 200
    assert style.headers["content-type"].startswith("text/css")
    missing = await client.get("/dashboard/nope.js")
    assert missing.status_code == 404


async def test_the_page_needs_no_key_but_the_api_still_does(
    client: AsyncTestClient[Litestar],
) -> None:
    assert (await client.get("/")).status_code == 200
    assert (await client.get("/v1/projects")).status_code == 401


async def test_access_token_query_is_refused_outside_the_sse_routes(
    client: AsyncTestClient[Litestar], tenant: Tenant
) -> None:
    listed = await client.get("/v1/projects", params={"access_token": tenant.api_key})
    assert listed.status_code == 401
    created = await client.post(
        "/v1/projects", json={"name": "x"}, params={"access_token": tenant.api_key}
    )
    assert created.status_code == 401


async def test_a_wrong_access_token_on_an_sse_route_is_401(
    client: AsyncTestClient[Litestar],
) -> None:
    project = uuid.uuid4()
    response = await client.get(
        f"/v1/projects/{project}/events", params={"access_token": "ij_not-a-real-key"}
    )
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    empty = await client.get(f"/v1/projects/{project}/events", params={"access_token": ""})
    assert empty.status_code == 401
    workspace = await client.get("/v1/projects/events", params={"access_token": "ij_nope"})
    assert workspace.status_code == 401


async def test_a_valid_access_token_reaches_the_sse_route(
    client: AsyncTestClient[Litestar], tenant: Tenant
) -> None:
    # An unknown project answers 404 only after authentication succeeded (401 otherwise).
    response = await client.get(
        f"/v1/projects/{uuid.uuid4()}/events", params={"access_token": tenant.api_key}
    )
    assert response.status_code == 404
    generation = await client.get(
        f"/v1/generations/{uuid.uuid4()}/events", params={"access_token": tenant.api_key}
    )
    assert generation.status_code == 404
