"""The worker driving every provider and Supabase Storage, configured only through the
environment, exactly as on Render: emulators of OpenAI, Google, fal and Supabase Storage stand
in for the real services."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.test_lifecycle import create_generation, create_project, wait_for
from tests.emulators.all import Services, serving
from tests.emulators.recorder import Scripted

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def services() -> Iterator[Services]:
    with serving(Services()) as state:
        yield state


@pytest.fixture(scope="module")
def stack_env(services: Services) -> dict[str, str]:
    return {
        "STORAGE_BACKEND": "supabase",
        "SUPABASE_URL": services.storage.url,
        "SUPABASE_SERVICE_ROLE_KEY": services.storage.key,
        "SUPABASE_BUCKET": "generated",
        "OPENAI_API_KEY": services.openai.key,
        "OPENAI_BASE_URL": services.openai.url,
        "GOOGLE_API_KEY": services.google.key,
        "GOOGLE_BASE_URL": services.google.base_url,
        "FAL_KEY": services.fal.key,
        "FAL_BASE_URL": services.fal.base_url,
        "STABILITY_API_KEY": services.stability.key,
        "STABILITY_BASE_URL": services.stability.base_url,
        "POLL_INTERVAL_S": "0.2",
    }


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        # Models served today, named: each provider's default is the catalogue's to choose.
        ("openai", "gpt-image-2.6-flare"),
        ("google", "gemini-nano-banana-2.1"),
        ("fal", "fal-ai/flux/dev"),
        ("stability", "sd3.5-large"),
        ("local", "pillow-v1"),
        # No model: the catalogue's default, which each emulator serves as the provider does.
        ("openai", None),
        ("google", None),
        ("fal", None),
        ("stability", None),
    ],
)
async def test_each_provider_lands_its_result_in_supabase_storage(
    http: httpx.AsyncClient, services: Services, provider: str, model: str | None
) -> None:
    project_id = await create_project(http)
    generation = await create_generation(
        http,
        project_id,
        f"a lighthouse by {provider}",
        provider=provider,
        prompt_spec={"size": "1024x1024"},
        **({"model": model} if model else {}),
    )
    if model is not None:
        assert generation["model"] == model
    else:
        models = (await http.get("/v1/models")).json()["data"]
        default = next(m for m in models if m["provider"] == provider and m["default"])
        assert (generation["model"], default["status"]) == (default["model"], "active")
    done = await wait_for(http, generation["id"], "completed", timeout=30)
    key = f"{done['workspace_id']}/{project_id}/{generation['id']}.png"
    assert (
        done["result_image_url"]
        == f"{services.storage.url}/storage/v1/object/public/generated/{key}"
    )
    data, content_type = services.storage.objects[f"generated/{key}"]
    assert content_type == "image/png"
    assert data.startswith(b"\x89PNG")
    served = await http.get(done["result_image_url"])
    assert served.status_code == 200 and served.content == data
    uploads = [
        r for r in services.storage.recorder.requests if r.method == "POST" and key in r.path
    ]
    assert uploads and uploads[-1].headers.get("x-upsert") == "true"


async def test_a_flaky_storage_is_retried_and_the_generation_still_completes(
    http: httpx.AsyncClient, services: Services
) -> None:
    services.storage.recorder.script(
        Scripted(500, {"statusCode": "500", "error": "Internal", "message": "try again"}),
        Scripted(503, {"statusCode": "503", "error": "Unavailable", "message": "try again"}),
    )
    project_id = await create_project(http)
    generation = await create_generation(http, project_id, "despite storage hiccups")
    done = await wait_for(http, generation["id"], "completed", timeout=30)
    assert done["result_image_url"].startswith(services.storage.url)


async def test_a_storage_that_stays_down_fails_with_storage_error(
    http: httpx.AsyncClient, services: Services
) -> None:
    down = Scripted(503, {"statusCode": "503", "error": "Unavailable", "message": "down"})
    # Three attempts for each of the two uploads (the result and its thumbnail).
    services.storage.recorder.script(*[down] * 6)
    project_id = await create_project(http)
    generation = await create_generation(http, project_id, "storage is down")
    failed = await wait_for(http, generation["id"], "failed", timeout=30)
    assert failed["error_code"] == "storage_error"
