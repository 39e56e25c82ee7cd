"""The dashboard in a real headless Chromium against real API and worker processes.

Needs Debian's Chromium at /usr/bin/chromium (scripts/test installs it when it can); Playwright
drives it (its own browser download cannot be used here). DASHBOARD_SCREENSHOT=docs/dashboard.png
also writes the final screenshot there.
"""

from __future__ import annotations

import base64
import io
import json
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from PIL import Image
from psycopg_pool import AsyncConnectionPool

from tests.conftest import Tenant
from tests.e2e.conftest import Stack
from tests.e2e.test_lifecycle import wait_for
from worker.core.errors import RESOLUTIONS, ErrorCode

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

pytestmark = pytest.mark.e2e

CHROMIUM = Path(os.environ.get("DASHBOARD_CHROMIUM", "/usr/bin/chromium"))
HAVE_CHROMIUM = CHROMIUM.exists()
# Slow enough that a person (and the test) sees the bar stop at each step.
STACK_ENV = {"LOCAL_PROVIDER_DELAY_MS": "1500"}
TIMEOUT_MS = 30_000

# Records every state a generation card shows, as the DOM changes (not sampled afterwards).
RECORD_STATES = """() => {
  window.__seen = [];
  const list = document.getElementById('generation-list');
  const record = () => {
    for (const item of list.querySelectorAll('.generation')) {
      window.__seen.push({
        id: item.dataset.generationId,
        status: item.dataset.status,
        badge: item.querySelector('.badge').textContent,
        progress: Number(item.querySelector('progress').getAttribute('aria-valuenow')),
        step: item.querySelector('.step').textContent,
      });
    }
  };
  new MutationObserver(record).observe(list, {
    subtree: true, childList: true, attributes: true, characterData: true,
  });
}"""


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    if not HAVE_CHROMIUM:
        pytest.skip(
            f"no Chromium at {CHROMIUM}: install Debian's `chromium` package "
            "(scripts/test does when run as root with apt-get) or set DASHBOARD_CHROMIUM"
        )
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield browser
        await browser.close()


@pytest.fixture
def page_errors() -> list[str]:
    """Script errors, console errors and HTTP errors the page ran into."""
    return []


@pytest.fixture
async def page(browser: Browser, page_errors: list[str]) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    errors = page_errors
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on(
        "response",
        lambda response: (
            errors.append(f"{response.status} {response.url}") if response.status >= 400 else None
        ),
    )
    yield page
    await context.close()
    # A script error or a CSP violation is a failure even when the flow looked right.
    assert errors == []


async def sign_in(page: Page, stack: Stack, tenant: Tenant) -> None:
    await page.goto(f"{stack.url}/")
    await page.get_by_label("API key", exact=True).fill(tenant.api_key)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_selector("#app:not([hidden])", timeout=TIMEOUT_MS)


async def add_project(page: Page, name: str) -> None:
    await page.get_by_label("New project name", exact=True).fill(name)
    await page.get_by_role("button", name="Add").click()
    await page.wait_for_selector("#project-view:not([hidden])", timeout=TIMEOUT_MS)
    await page.wait_for_selector('#live[data-state="on"]', timeout=TIMEOUT_MS)


async def submit_generation(page: Page, prompt: str, provider: str, size: str) -> None:
    await page.get_by_label("Prompt", exact=True).fill(prompt)
    await page.get_by_label("Provider", exact=True).select_option(provider)
    await page.get_by_label("Size", exact=True).select_option(size)
    await page.get_by_role("button", name="Generate", exact=True).click()


async def card_with(page: Page, status: str, prompt: str | None = None) -> str:
    """The id of the card showing `status` (and `prompt`), once one does."""
    selector = f'.generation[data-status="{status}"]'
    handle = await page.wait_for_function(
        """([selector, prompt]) => {
          for (const item of document.querySelectorAll(selector)) {
            if (prompt === null || item.querySelector('.prompt').textContent === prompt) {
              return item.dataset.generationId;
            }
          }
          return null;
        }""",
        arg=[selector, prompt],
        timeout=TIMEOUT_MS,
    )
    value = await handle.json_value()
    assert isinstance(value, str)
    return value


def screenshot_paths(tmp_path: Path) -> list[Path]:
    paths = [tmp_path / "dashboard.png"]
    if target := os.environ.get("DASHBOARD_SCREENSHOT"):
        paths.append(Path(target))
    return paths


async def test_a_generation_from_the_form_moves_live_to_ready(
    page: Page, stack: Stack, tenant: Tenant, tmp_path: Path
) -> None:
    await sign_in(page, stack, tenant)
    await add_project(page, "Browser test")
    await page.evaluate(RECORD_STATES)
    requests: list[str] = []
    page.on("request", lambda request: requests.append(f"{request.method} {request.url}"))

    prompt = "a lighthouse at dusk, watercolor"
    await submit_generation(page, prompt, "local", "512x512")
    generation_id = await card_with(page, "completed", prompt)
    await page.wait_for_function(
        """(id) => {
          // The list shows the 256 px thumbnail (from the live event), the viewer the full image.
          const img = document.querySelector(`[data-generation-id="${id}"] .thumb img`);
          return img && !img.hidden && img.complete && img.naturalWidth === 256
            && img.getAttribute('src').endsWith('-thumb.webp');
        }""",
        arg=generation_id,
        timeout=TIMEOUT_MS,
    )

    seen: list[dict[str, Any]] = [
        s for s in await page.evaluate("window.__seen") if s["id"] == generation_id
    ]
    progresses = [s["progress"] for s in seen]
    # The bar moved through intermediate values, never backwards, and ended full.
    assert any(0 < p < 100 for p in progresses), progresses
    assert progresses == sorted(progresses), seen
    assert progresses[-1] == 100
    badges = {s["badge"] for s in seen}
    assert {"Processing…", "Ready"} <= badges, badges
    steps = {s["step"] for s in seen}
    assert "AI model is generating the image" in steps, steps
    assert seen[-1]["status"] == "completed"

    # Live means the stream, not polling: after the POST no API read but at most the one
    # lookup of a generation the stream announced before the POST answered.
    api_reads = [r for r in requests if r.startswith("GET") and "/v1/" in r]
    assert len(api_reads) <= 1, api_reads
    assert sum(r.startswith("POST") and r.endswith("/v1/generations") for r in requests) == 1

    # The thumbnail opens the full-size image.
    await page.locator(f'[data-generation-id="{generation_id}"] .thumb').click()
    viewer = page.locator("#viewer")
    await viewer.wait_for(state="visible")
    await page.wait_for_function(
        "() => document.getElementById('viewer-image').naturalWidth > 0", timeout=TIMEOUT_MS
    )
    width = await page.evaluate("document.getElementById('viewer-image').naturalWidth")
    assert width == 512
    await page.screenshot(path=str(tmp_path / "viewer.png"))
    await page.get_by_role("button", name="Close").click()
    await viewer.wait_for(state="hidden")

    # The key lives in sessionStorage: a reload keeps the session and the finished card.
    await page.reload()
    await page.wait_for_selector(
        f'[data-generation-id="{generation_id}"][data-status="completed"]', timeout=TIMEOUT_MS
    )
    await page.get_by_role("button", name="Sign out").click()
    assert await page.evaluate("sessionStorage.length") == 0
    await page.wait_for_selector("#login:not([hidden])")


async def test_a_failure_and_a_hostile_prompt_are_shown_as_text(
    page: Page, stack: Stack, tenant: Tenant, page_errors: list[str]
) -> None:
    # A wrong key is refused on the spot, and not kept.
    await page.goto(f"{stack.url}/")
    await page.get_by_label("API key", exact=True).fill("ij_wrong")
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("alert").filter(has_text="not accepted").wait_for()
    assert await page.evaluate("sessionStorage.length") == 0
    assert {"401" in error for error in page_errors} == {True}, page_errors
    page_errors.clear()

    await sign_in(page, stack, tenant)
    await add_project(page, "<b>not bold</b>")
    hostile = '<img src=x onerror="window.__xss = 1"> <script>window.__xss = 2</script>'
    # No Google key on this worker: the generation fails at once with the catalogue's error.
    await submit_generation(page, hostile, "google", "1024x1024")
    generation_id = await card_with(page, "failed", hostile)
    card = page.locator(f'[data-generation-id="{generation_id}"]')
    await card.locator(".error-message").wait_for(state="visible")
    assert "not configured" in await card.locator(".error-message").inner_text()
    # Beside the message, what to do about it: the catalogue's resolution, word for word.
    resolution = RESOLUTIONS[ErrorCode.PROVIDER_ERROR]
    assert await card.locator(".resolution").text_content() == resolution
    assert await card.locator(".badge").inner_text() == "Failed"
    assert await card.get_by_role("button", name="Retry").is_visible()
    # Prompts and names are text: no element was made from them, no script ran.
    assert await page.locator('img[src="x"]').count() == 0
    assert await page.locator("#generation-list script").count() == 0
    assert await page.evaluate("window.__xss") is None
    assert await page.locator("#project-title").inner_text() == "<b>not bold</b>"

    # Retry runs it again: the card leaves Failed, and (still no key) comes back to it.
    await page.evaluate(RECORD_STATES)
    await card.get_by_role("button", name="Retry").click()
    await page.wait_for_function(
        """(id) => {
          const statuses = window.__seen.filter((s) => s.id === id).map((s) => s.status);
          const left = statuses.findIndex((status) => status !== 'failed');
          return left >= 0 && statuses.slice(left).includes('failed');
        }""",
        arg=generation_id,
        timeout=TIMEOUT_MS,
    )
    await page.wait_for_selector(f'[data-generation-id="{generation_id}"][data-status="failed"]')

    # Bad input comes back as the problem's text next to the form.
    await page.get_by_label("Prompt", exact=True).fill("\u0000")
    await page.get_by_role("button", name="Generate", exact=True).click()
    await page.wait_for_function(
        "() => document.getElementById('generation-error').textContent.includes('prompt')",
        timeout=TIMEOUT_MS,
    )
    # That 422 was the point; it is the only error the page met.
    assert {"422" in error for error in page_errors} == {True}, page_errors
    page_errors.clear()


def mask_data_url() -> str:
    mask = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    mask.paste((255, 255, 255, 255), (16, 16, 48, 48))
    out = io.BytesIO()
    mask.save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


async def test_versions_arrive_live_and_the_screenshot(
    page: Page, stack: Stack, tenant: Tenant, tmp_path: Path
) -> None:
    async with httpx.AsyncClient(base_url=stack.url, headers=tenant.headers, timeout=30) as http:
        project = (await http.post("/v1/projects", json={"name": "Seaside campaign"})).json()
        original = (
            await http.post(
                "/v1/generations",
                json={
                    "project_id": project["id"],
                    "prompt": "a lighthouse on a cliff at dusk, watercolor",
                    "prompt_spec": {"size": "512x512"},
                },
            )
        ).json()
        failed = (
            await http.post(
                "/v1/generations",
                json={
                    "project_id": project["id"],
                    "prompt": "a harbour at night, photorealistic",
                    "provider": "google",
                },
            )
        ).json()
        await wait_for(http, original["id"], "completed")
        await wait_for(http, failed["id"], "failed")

        await sign_in(page, stack, tenant)
        await page.wait_for_selector(f'[data-generation-id="{original["id"]}"]')
        await page.wait_for_selector('#live[data-state="on"]', timeout=TIMEOUT_MS)

        # An edit made elsewhere (here: the API) shows up live as version 2.
        edit = await http.post(
            f"/v1/generations/{original['id']}/edits",
            json={"prompt": "add a red balloon in the sky", "mask": mask_data_url()},
        )
        assert edit.status_code == 201, edit.text
        edit_id = edit.json()["id"]
        card = page.locator(f'[data-generation-id="{edit_id}"]')
        await page.wait_for_selector(
            f'[data-generation-id="{edit_id}"][data-status="completed"]', timeout=TIMEOUT_MS
        )
        assert await card.locator(".version").inner_text() == "v2"
        await card.get_by_role("button", name="Versions").click()
        versions = card.locator(".versions li")
        await versions.nth(1).wait_for()
        texts = await versions.all_inner_texts()
        assert any("v1 (original)" in t for t in texts) and any("v2 (add)" in t for t in texts)

        # The project's counters followed the stream.
        await page.wait_for_function(
            "() => document.getElementById('project-counters').textContent.startsWith('2/3 ready')",
            timeout=TIMEOUT_MS,
        )

        # A project made elsewhere joins the list, and its counters follow, live.
        other = (await http.post("/v1/projects", json={"name": "Mountain series"})).json()
        created = await http.post(
            "/v1/generations",
            json={"project_id": other["id"], "prompt": "snowy peaks at dawn"},
        )
        assert created.status_code == 201
        await page.wait_for_function(
            """(id) => {
              const item = document.querySelector(`.project[data-project-id="${id}"]`);
              return item && item.querySelector('.counters').textContent.startsWith('1/1 ready')
                && item.querySelector('.badge').textContent === 'Ready';
            }""",
            arg=other["id"],
            timeout=TIMEOUT_MS,
        )

        # One more from the form, captured mid-way for the picture.
        await submit_generation(page, "a sailing boat in a storm, oil painting", "local", "512x512")
        await page.wait_for_function(
            """() => [...document.querySelectorAll('.generation[data-status="processing"]')]
                .some((item) => Number(item.querySelector('progress').value) >= 50)""",
            timeout=TIMEOUT_MS,
        )
        for path in screenshot_paths(tmp_path):
            path.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(path), full_page=True)
            with Image.open(path) as shot:
                assert shot.size[0] == 1280
        await card_with(page, "completed", "a sailing boat in a storm, oil painting")


# Records every state a canvas node card shows, as the DOM changes.
RECORD_NODES = """() => {
  window.__nodes = [];
  const canvas = document.getElementById('canvas');
  const record = () => {
    for (const item of canvas.querySelectorAll('.canvas-node')) {
      window.__nodes.push({
        id: item.dataset.nodeId,
        status: item.dataset.status,
        badge: item.querySelector('.badge').textContent,
        version: item.querySelector('.version').textContent,
      });
    }
  };
  new MutationObserver(record).observe(canvas, {
    subtree: true, childList: true, attributes: true, characterData: true,
  });
}"""


async def wait_for_node(page: Page, node_id: str, status: str, version: str) -> None:
    await page.wait_for_function(
        """([id, status, version]) => {
          const item = document.querySelector(`.canvas-node[data-node-id="${id}"]`);
          return item && item.dataset.status === status
            && item.querySelector('.version').textContent === version;
        }""",
        arg=[node_id, status, version],
        timeout=TIMEOUT_MS,
    )


async def statuses_seen(page: Page, node_id: str) -> list[str]:
    seen: list[dict[str, Any]] = await page.evaluate("window.__nodes")
    statuses: list[str] = []
    for state in seen:
        if state["id"] == node_id and (not statuses or statuses[-1] != state["status"]):
            statuses.append(state["status"])
    return statuses


async def expect_thumbnail(page: Page, node_id: str, generation: dict[str, Any]) -> None:
    """The card shows the generation's thumbnail (256 px on its longest side), not the full
    image."""
    assert generation["thumbnail_url"], generation
    assert generation["thumbnail_url"] != generation["result_image_url"]
    await page.wait_for_function(
        """([id, src]) => {
          const img = document.querySelector(`.canvas-node[data-node-id="${id}"] .thumb img`);
          return img && !img.hidden && img.getAttribute('src') === src
            && img.complete && img.naturalWidth === 256;
        }""",
        arg=[node_id, generation["thumbnail_url"]],
        timeout=TIMEOUT_MS,
    )


def canvas_screenshot() -> list[Path]:
    target = os.environ.get("CANVAS_SCREENSHOT")
    return [Path(target)] if target else []


async def test_the_canvas_follows_its_nodes_live(
    page: Page, stack: Stack, tenant: Tenant, pool: AsyncConnectionPool, tmp_path: Path
) -> None:
    workflow_id = str(uuid.uuid4())
    # Positions live on workflow_nodes (the canvas app writes them); one node was never placed.
    async with pool.connection() as conn:
        for node_id, position in [
            ("hero", {"x": 40, "y": 24}),
            ("broken", {"x": 320, "y": 60}),
            ("loose", {}),
        ]:
            await conn.execute(
                "INSERT INTO workflow_nodes (id, workflow_id, workspace_id, position)"
                " VALUES (%s, %s, %s, %s)",
                (node_id, workflow_id, tenant.workspace_id, json.dumps(position)),
            )
    async with httpx.AsyncClient(base_url=stack.url, headers=tenant.headers, timeout=30) as http:
        project = (await http.post("/v1/projects", json={"name": "Canvas"})).json()

        async def generate(node_id: str, **fields: Any) -> dict[str, Any]:
            response = await http.post(
                "/v1/generations",
                json={
                    "project_id": project["id"],
                    "workflow_id": workflow_id,
                    "node_id": node_id,
                    "prompt_spec": {"base_prompt": f"the {node_id} node", "size": "512x512"},
                    **fields,
                },
            )
            assert response.status_code == 201, response.text
            created: dict[str, Any] = response.json()
            return created

        # `#workflow=<uuid>` opens the canvas once signed in.
        await page.goto(f"{stack.url}/#workflow={workflow_id}")
        await page.get_by_label("API key", exact=True).fill(tenant.api_key)
        await page.get_by_role("button", name="Sign in").click()
        await page.wait_for_selector("#canvas-view:not([hidden])", timeout=TIMEOUT_MS)
        await page.wait_for_selector('#canvas-live[data-state="on"]', timeout=TIMEOUT_MS)
        await page.wait_for_selector('.canvas-node[data-node-id="loose"]', timeout=TIMEOUT_MS)
        assert await page.locator("#canvas-workflow").inner_text() == workflow_id
        await page.evaluate(RECORD_NODES)

        # Placed nodes sit at their position (plus the canvas's 16 px margin); the unplaced one
        # goes to the grid below them.
        canvas = await page.locator("#canvas").bounding_box()
        hero_box = await page.locator('.canvas-node[data-node-id="hero"]').bounding_box()
        loose_box = await page.locator('.canvas-node[data-node-id="loose"]').bounding_box()
        assert canvas and hero_box and loose_box
        assert (hero_box["x"] - canvas["x"], hero_box["y"] - canvas["y"]) == (56, 40)
        assert loose_box["y"] - canvas["y"] > 60 + 16 + hero_box["height"] / 2
        assert loose_box["x"] - canvas["x"] == 16

        # A generation on the node: the card goes live from pending/running to completed, v1.
        first = await generate("hero")
        await wait_for_node(page, "hero", "completed", "v1")
        assert "running" in await statuses_seen(page, "hero")
        first = await wait_for(http, first["id"], "completed")
        await expect_thumbnail(page, "hero", first)
        hero = page.locator('.canvas-node[data-node-id="hero"]')
        assert await hero.locator(".badge").inner_text() == "completed"
        assert await hero.locator(".error-message").is_hidden()

        # The thumbnail opens the full-size image.
        await hero.locator(".thumb").click()
        viewer = page.locator("#viewer")
        await viewer.wait_for(state="visible")
        assert await page.get_attribute("#viewer-image", "src") == first["result_image_url"]
        await page.wait_for_function(
            "() => document.getElementById('viewer-image').naturalWidth === 512",
            timeout=TIMEOUT_MS,
        )
        await page.get_by_role("button", name="Close").click()
        await viewer.wait_for(state="hidden")

        # Regenerate: the next version on the same node runs and lands as v2.
        await page.evaluate(RECORD_NODES)
        await hero.get_by_role("button", name="Regenerate").click()
        await wait_for_node(page, "hero", "completed", "v2")
        assert "running" in await statuses_seen(page, "hero")
        versions = (await http.get(f"/v1/generations/{first['id']}/versions")).json()["data"]
        assert [v["version"] for v in versions] == [1, 2]
        second = await wait_for(http, versions[1]["id"], "completed")
        assert second["node_id"] == "hero" and second["workflow_id"] == workflow_id
        await expect_thumbnail(page, "hero", second)
        await hero.locator(".thumb").click()
        await viewer.wait_for(state="visible")
        assert await page.get_attribute("#viewer-image", "src") == second["result_image_url"]
        await page.get_by_role("button", name="Close").click()
        await viewer.wait_for(state="hidden")

        # A failure (no Google key on this worker): the message and the catalogue's resolution.
        failing = await generate("broken", provider="google")
        failed = await wait_for(http, failing["id"], "failed")
        assert failed["error_code"] == "provider_error"
        await wait_for_node(page, "broken", "error", "v1")
        broken = page.locator('.canvas-node[data-node-id="broken"]')
        assert await broken.locator(".badge").inner_text() == "error"
        assert await broken.locator(".error-message").text_content() == failed["error_message"]
        resolution = RESOLUTIONS[ErrorCode.PROVIDER_ERROR]
        assert failed["error_resolution"] == resolution
        assert await broken.locator(".resolution").text_content() == resolution
        assert await broken.locator(".thumb").is_disabled()

        # Retry runs it again and (still no key) it fails again: a pending blip that short may
        # be coalesced away by the stream, so the node's updatedAt tells the new state apart.
        before = await broken.get_attribute("data-updated-at")
        assert before
        await broken.get_by_role("button", name="Retry").click()
        await page.wait_for_function(
            """(before) => {
              const item = document.querySelector('.canvas-node[data-node-id="broken"]');
              return item.dataset.updatedAt !== before && item.dataset.status === 'error';
            }""",
            arg=before,
            timeout=TIMEOUT_MS,
        )
        retried = await wait_for(http, failing["id"], "failed")
        assert retried["finished_at"] != failed["finished_at"]
        await wait_for_node(page, "broken", "error", "v1")
        for path in [tmp_path / "canvas.png", *canvas_screenshot()]:
            await page.screenshot(path=str(path), full_page=True)

        # The project's generations name their workflow: a link opens (here: reopens) its
        # canvas; closing it leaves the project view.
        await page.get_by_role("link", name="Close canvas").click()
        await page.wait_for_selector("#canvas-view[hidden]", state="attached")
        link = page.locator(f'#workflow-list a[data-workflow-id="{workflow_id}"]')
        await link.click()
        await page.wait_for_selector('.canvas-node[data-node-id="hero"][data-status="completed"]')
        assert await page.locator('.canvas-node[data-node-id="hero"] .version').inner_text() == "v2"

        # On the generation cards too: the failure's resolution, and the thumbnail rule.
        card = page.locator(f'[data-generation-id="{failed["id"]}"]')
        assert await card.locator(".resolution").text_content() == resolution
        assert await card.get_by_role("button", name="Retry").is_visible()
        done = page.locator(f'[data-generation-id="{second["id"]}"]')
        assert await done.locator(".thumb img").get_attribute("src") == second["thumbnail_url"]
