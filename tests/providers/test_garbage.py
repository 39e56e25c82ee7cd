"""Providers that answer garbage: truncated JSON, HTML error pages, no image, a file that is not
an image, an image far too large. Each ends in the catalogue's error, never a crash."""

from __future__ import annotations

import base64
import io
import uuid
from pathlib import Path

import pytest
from PIL import Image
from psycopg_pool import AsyncConnectionPool

from tests.emulators.fal import FalState
from tests.emulators.google import GoogleState
from tests.emulators.openai import OpenAIState
from tests.emulators.recorder import Scripted
from tests.factories import insert_generation
from tests.providers.test_fal import drive, runtime
from tests.worker.conftest import generation_row, make_runtime
from worker.core.errors import ErrorCode, GenerationError
from worker.core.images import check_result
from worker.providers.base import build_request
from worker.providers.google import GoogleProvider
from worker.providers.openai import OpenAIProvider
from worker.queue import pipeline
from worker.queue.runtime import Runtime

HTML = (
    "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"
)
TRUNCATED = '{"created": 1, "data": [{"b64_json": "iVBO'
# Models served today, named explicitly: the adapters have no default.
OPENAI_MODEL = "gpt-image-2.6-flare"
GOOGLE_MODEL = "gemini-nano-banana-2.1"


def bomb_png() -> bytes:
    """A small file that claims to be a 20000 x 20000 image."""
    out = io.BytesIO()
    Image.new("1", (20000, 20000)).save(out, format="PNG")
    return out.getvalue()


def request(model: str) -> object:
    return build_request("a fox", model, {"size": "1024x1024"}, default_side=1024, source=None)


GARBAGE: list[tuple[str, Scripted, ErrorCode, bool]] = [
    ("truncated JSON", Scripted(200, TRUNCATED), ErrorCode.PROVIDER_ERROR, True),
    (
        "HTML error page",
        Scripted(502, HTML, content_type="text/html"),
        ErrorCode.PROVIDER_ERROR,
        True,
    ),
    (
        "HTML with a 200",
        Scripted(200, HTML, content_type="text/html"),
        ErrorCode.PROVIDER_ERROR,
        True,
    ),
    ("JSON of the wrong shape", Scripted(200, {"unexpected": True}), ErrorCode.NO_RESULT, False),
]


@pytest.mark.parametrize(
    ("case", "answer", "code", "retryable"), GARBAGE, ids=[g[0] for g in GARBAGE]
)
async def test_openai_garbage(
    openai_emulator: OpenAIState, case: str, answer: Scripted, code: ErrorCode, retryable: bool
) -> None:
    openai_emulator.recorder.script(answer)
    provider = OpenAIProvider(openai_emulator.key, openai_emulator.url, timeout_s=10)
    try:
        with pytest.raises(GenerationError) as caught:
            await provider.generate(request(OPENAI_MODEL))  # type: ignore[arg-type]
    finally:
        await provider.aclose()
    assert (caught.value.code, caught.value.retryable) == (code, retryable), caught.value.message


@pytest.mark.parametrize(
    ("case", "answer", "code", "retryable"), GARBAGE, ids=[g[0] for g in GARBAGE]
)
async def test_google_garbage(
    google_emulator: GoogleState, case: str, answer: Scripted, code: ErrorCode, retryable: bool
) -> None:
    google_emulator.recorder.script(answer)
    provider = GoogleProvider(google_emulator.key, google_emulator.base_url, timeout_s=10)
    with pytest.raises(GenerationError) as caught:
        await provider.generate(request(GOOGLE_MODEL))  # type: ignore[arg-type]
    assert (caught.value.code, caught.value.retryable) == (code, retryable), caught.value.message


@pytest.mark.parametrize(
    "data",
    [b"", b"<html>not an image</html>", b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, bomb_png()],
    ids=["empty", "html", "truncated png", "decompression bomb"],
)
async def test_results_that_are_not_usable_images_are_no_result(data: bytes) -> None:
    with pytest.raises(GenerationError) as caught:
        await check_result(data)
    assert caught.value.code is ErrorCode.NO_RESULT
    assert not caught.value.retryable


async def test_openai_answering_a_non_image_fails_the_generation_with_no_result(
    openai_emulator: OpenAIState, pool: AsyncConnectionPool, project_id: uuid.UUID, tmp_path: Path
) -> None:
    junk = base64.b64encode(b"this is not a picture").decode()
    openai_emulator.recorder.script(Scripted(200, {"created": 1, "data": [{"b64_json": junk}]}))
    rt = runtime_with(pool, tmp_path, OpenAIProvider(openai_emulator.key, openai_emulator.url))
    generation_id = await insert_generation(pool, project_id, provider="openai", model=OPENAI_MODEL)
    await pipeline.run_generation(rt, generation_id, attempt=1)
    row = await generation_row(pool, generation_id)
    assert (row["status"], row["error_code"]) == ("failed", "no_result")
    assert api_calls_sent(openai_emulator) == [OPENAI_MODEL]


def api_calls_sent(state: OpenAIState) -> list[str]:
    return [str(r.json["model"]) for r in state.recorder.requests if isinstance(r.json, dict)]


def runtime_with(pool: AsyncConnectionPool, tmp_path: Path, provider: OpenAIProvider) -> Runtime:
    return make_runtime(pool, tmp_path, {"openai": provider})


@pytest.mark.parametrize(
    ("behaviour", "code"), [("huge", "result_unreachable"), ("not-an-image", "no_result")]
)
async def test_fal_results_too_large_or_not_images(
    fal: FalState,
    pool: AsyncConnectionPool,
    project_id: uuid.UUID,
    tmp_path: Path,
    behaviour: str,
    code: str,
) -> None:
    fal.next_behaviour.append(behaviour)
    rt = runtime(pool, fal, tmp_path)
    generation_id = await insert_generation(pool, project_id, provider="fal")
    await pipeline.run_generation(rt, generation_id, attempt=1)
    await drive(rt, pool, generation_id)
    row = await generation_row(pool, generation_id)
    assert (row["status"], row["error_code"]) == ("failed", code)


async def test_fal_html_status_pages_are_retried_by_polling_again(
    fal: FalState, pool: AsyncConnectionPool, project_id: uuid.UUID, tmp_path: Path
) -> None:
    rt = runtime(pool, fal, tmp_path)
    generation_id = await insert_generation(pool, project_id, provider="fal")
    await pipeline.run_generation(rt, generation_id, attempt=1)
    fal.recorder.script(Scripted(502, HTML, content_type="text/html"), Scripted(200, TRUNCATED))
    await drive(rt, pool, generation_id)
    row = await generation_row(pool, generation_id)
    assert row["status"] == "completed"
