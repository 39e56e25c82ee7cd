"""The Google provider through the real `google-genai` SDK, against the Gemini API emulator."""

from __future__ import annotations

import base64
import io
from typing import Any

import httpx
import pytest
from google import genai
from google.genai import types
from google.oauth2.credentials import Credentials
from PIL import Image

from tests.emulators.google import (
    SERVED,
    SHUT_DOWN,
    GoogleState,
    blocked_prompt,
    finish,
    google_error,
    png,
    rate_limited,
    server_error,
    text_only,
)
from tests.emulators.recorder import Scripted
from tests.emulators.server import _free_port
from worker.core.errors import ErrorCode, GenerationError
from worker.providers.base import ImageRequest, build_request
from worker.providers.google import GoogleProvider, image_size, nearest_ratio

# A model served today (the catalogue supplies defaults; the adapter has none).
MODEL = "gemini-nano-banana-2.1"


def provider(state: GoogleState, key: str | None = None) -> GoogleProvider:
    return GoogleProvider(key or state.key, state.base_url, timeout_s=10)


def request(spec: dict[str, Any] | None = None, **kwargs: Any) -> ImageRequest:
    return build_request(
        kwargs.pop("prompt", "a red fox in the snow"),
        kwargs.pop("model", MODEL),
        spec or {},
        default_side=GoogleProvider.default_side,
        source=kwargs.pop("source", None),
        mask=kwargs.pop("mask", None),
    )


def sent(state: GoogleState) -> tuple[str, dict[str, Any]]:
    assert len(state.recorder.requests) == 1
    recorded = state.recorder.requests[0]
    return recorded.path, recorded.json


def inline_parts(body: dict[str, Any]) -> list[bytes]:
    parts = body["contents"][0]["parts"]
    # The SDK sends URL-safe base64; the API accepts both alphabets.
    return [base64.urlsafe_b64decode(p["inlineData"]["data"]) for p in parts if "inlineData" in p]


def size_of(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


async def failure(provider: GoogleProvider, req: ImageRequest) -> GenerationError:
    with pytest.raises(GenerationError) as caught:
        await provider.generate(req)
    return caught.value


def test_nearest_ratio() -> None:
    assert nearest_ratio(1024, 1024) == "1:1"
    assert nearest_ratio(1920, 1080) == "16:9"
    assert nearest_ratio(1000, 800) == "5:4"
    assert nearest_ratio(700, 1000) == "2:3"
    assert nearest_ratio(2560, 1080) == "21:9"
    assert nearest_ratio(1000, 4000) == "9:16"  # 1:4 is sent only when asked for by name


def test_image_size_tiers() -> None:
    assert image_size(1024, 1024) == "1K"
    assert image_size(1344, 768) == "1K"  # Gemini's own 16:9 at 1K
    assert image_size(1920, 1080) == "2K"
    assert image_size(2048, 2048) == "2K"
    assert image_size(3840, 2160) == "4K"
    assert image_size(4096, 4096) == "4K"


async def test_text_to_image_sends_prompt_ratio_and_seed(google_emulator: GoogleState) -> None:
    spec = {"aspect_ratio": "16:9", "seed": 42, "negative_prompt": "blur, text"}
    result = await provider(google_emulator).generate(request(spec))

    path, body = sent(google_emulator)
    assert path == f"/v1beta/models/{MODEL}:generateContent"
    headers = google_emulator.recorder.requests[0].headers
    assert headers["x-goog-api-key"] == google_emulator.key
    assert body["contents"][0]["parts"] == [{"text": "a red fox in the snow\n\nAvoid: blur, text"}]
    config = body["generationConfig"]
    assert config["responseModalities"] == ["IMAGE"]
    assert config["imageConfig"] == {"aspectRatio": "16:9", "imageSize": "1K"}
    assert config["seed"] == 42
    assert config["candidateCount"] == 1

    assert result.content_type == "image/png"
    assert size_of(result.data) == (1344 // 16, 768 // 16)
    assert result.metadata["aspect_ratio"] == "16:9"
    assert result.metadata["image_size"] == "1K"
    assert result.metadata["ignored_parameters"] == []
    assert result.metadata["negative_prompt_in_prompt"] is True
    assert result.metadata["seed"] == 42
    assert result.metadata["model_version"] == MODEL


async def test_exact_size_and_quality_are_reported_as_ignored(
    google_emulator: GoogleState,
) -> None:
    result = await provider(google_emulator).generate(request({"size": "800x600", "quality": "hd"}))
    _, body = sent(google_emulator)
    assert body["generationConfig"]["imageConfig"] == {"aspectRatio": "4:3", "imageSize": "1K"}
    assert "seed" not in body["generationConfig"]
    assert body["contents"][0]["parts"] == [{"text": "a red fox in the snow"}]
    assert result.metadata["ignored_parameters"] == ["size", "quality"]
    assert "negative_prompt_in_prompt" not in result.metadata


@pytest.mark.parametrize(
    ("spec", "image_config", "pixels", "ignored"),
    [
        ({"size": "2048x2048"}, {"aspectRatio": "1:1", "imageSize": "2K"}, (2048, 2048), []),
        # The model picks the pixels of its ratio and tier: an exact 3840x2160 is not honoured.
        (
            {"size": "3840x2160"},
            {"aspectRatio": "16:9", "imageSize": "4K"},
            (5376, 3072),
            ["size"],
        ),
        ({"aspect_ratio": "1:4"}, {"aspectRatio": "1:4", "imageSize": "1K"}, (512, 2048), []),
        ({"aspect_ratio": "21:9"}, {"aspectRatio": "21:9", "imageSize": "1K"}, (1536, 672), []),
    ],
    ids=["2K", "4K", "1:4", "21:9"],
)
async def test_image_config_sets_ratio_and_size(
    google_emulator: GoogleState,
    spec: dict[str, Any],
    image_config: dict[str, str],
    pixels: tuple[int, int],
    ignored: list[str],
) -> None:
    result = await provider(google_emulator).generate(request(spec))
    _, body = sent(google_emulator)
    assert body["generationConfig"]["imageConfig"] == image_config
    assert size_of(result.data) == (pixels[0] // 16, pixels[1] // 16)
    assert result.metadata["ignored_parameters"] == ignored
    assert result.metadata["image_size"] == image_config["imageSize"]


@pytest.mark.parametrize("model", SERVED)
async def test_every_served_model_answers(google_emulator: GoogleState, model: str) -> None:
    result = await provider(google_emulator).generate(request({"size": "1024x1024"}, model=model))
    path, body = sent(google_emulator)
    assert path == f"/v1beta/models/{model}:generateContent"
    assert body["generationConfig"]["imageConfig"] == {"aspectRatio": "1:1", "imageSize": "1K"}
    assert result.metadata["model_version"] == model


async def test_a_ratio_the_model_lacks_is_no_result_sent_once(
    google_emulator: GoogleState,
) -> None:
    req = request({"aspect_ratio": "1:8"}, model="gemini-3-pro-image")
    error = await failure(provider(google_emulator), req)
    assert error.code is ErrorCode.NO_RESULT and not error.retryable
    assert "aspect ratio" in error.message and "INVALID_ARGUMENT" in error.message
    assert len(google_emulator.recorder.requests) == 1


async def test_image_to_image_sends_the_source_part(google_emulator: GoogleState) -> None:
    source = png(32, 24)
    await provider(google_emulator).generate(request(prompt="make it night", source=source))
    _, body = sent(google_emulator)
    parts = body["contents"][0]["parts"]
    assert parts[0] == {"text": "make it night"}
    inline = parts[1]["inlineData"]
    assert inline.get("mimeType", inline.get("mime_type")) == "image/png"
    assert inline_parts(body) == [source]


async def test_edit_sends_source_and_mask(google_emulator: GoogleState) -> None:
    source, mask = png(32, 32), png(32, 32)[:-1] + b"\x00"
    result = await provider(google_emulator).edit(
        request(prompt="add a hat", source=source, mask=mask)
    )
    _, body = sent(google_emulator)
    text = body["contents"][0]["parts"][0]["text"]
    assert "transparent" in text and text.endswith("add a hat")
    assert inline_parts(body) == [source, mask]
    assert result.content_type == "image/png" and result.metadata["ignored_parameters"] == []


async def test_edit_without_a_mask_is_refused(google_emulator: GoogleState) -> None:
    with pytest.raises(GenerationError) as caught:
        await provider(google_emulator).edit(request(source=png(8, 8)))
    assert caught.value.code is ErrorCode.MASK_MISSING
    assert google_emulator.recorder.requests == []


REFUSALS: list[tuple[str, Scripted, ErrorCode]] = [
    *(
        (f"blockReason {r}", blocked_prompt(r), ErrorCode.CONTENT_POLICY)
        for r in ("SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "IMAGE_SAFETY")
    ),
    ("blockReason OTHER", blocked_prompt("OTHER"), ErrorCode.NO_RESULT),
    *(
        (f"finishReason {r}", finish(r), ErrorCode.CONTENT_POLICY)
        for r in (
            "IMAGE_SAFETY",
            "IMAGE_PROHIBITED_CONTENT",
            "SAFETY",
            "PROHIBITED_CONTENT",
            "IMAGE_RECITATION",
        )
    ),
    ("finishReason NO_IMAGE", finish("NO_IMAGE"), ErrorCode.NO_RESULT),
    ("finishReason IMAGE_OTHER", finish("IMAGE_OTHER"), ErrorCode.NO_RESULT),
    ("text only", text_only(), ErrorCode.NO_RESULT),
    ("500", server_error(), ErrorCode.PROVIDER_ERROR),
    (
        "400",
        Scripted(400, google_error(400, "INVALID_ARGUMENT", "Unable to process input image.")),
        ErrorCode.NO_RESULT,
    ),
    (
        "403",
        Scripted(403, google_error(403, "PERMISSION_DENIED", "Permission denied.")),
        ErrorCode.PROVIDER_ERROR,
    ),
    (
        "401",
        Scripted(401, google_error(401, "UNAUTHENTICATED", "Invalid credentials.")),
        ErrorCode.PROVIDER_ERROR,
    ),
]


@pytest.mark.parametrize(("case", "answer", "code"), REFUSALS, ids=[r[0] for r in REFUSALS])
async def test_answers_map_to_the_catalogue(
    google_emulator: GoogleState, case: str, answer: Scripted, code: ErrorCode
) -> None:
    google_emulator.recorder.script(answer)
    error = await failure(provider(google_emulator), request())
    assert error.code is code
    # Only a server error is worth another attempt; refusals and 401/403 are final.
    assert error.retryable is (case == "500")
    assert len(google_emulator.recorder.requests) == 1  # the SDK does not retry on its own
    if case.startswith(("blockReason", "finishReason")):
        assert case.split()[1] in error.message


@pytest.mark.parametrize("model", [*SHUT_DOWN, "dall-e-3"])
async def test_a_model_google_does_not_serve_is_model_unavailable_sent_once(
    google_emulator: GoogleState, model: str
) -> None:
    error = await failure(provider(google_emulator), request(model=model))
    assert error.code is ErrorCode.MODEL_UNAVAILABLE
    assert not error.retryable
    assert model in error.message and "NOT_FOUND" in error.message
    assert len(google_emulator.recorder.requests) == 1


async def test_echoed_image_data_is_redacted(google_emulator: GoogleState) -> None:
    echoed = base64.b64encode(png(16, 16)).decode()
    message = f"Invalid value at 'contents[0].parts[1].inline_data.data': \"{echoed}\""
    google_emulator.recorder.script(Scripted(400, google_error(400, "INVALID_ARGUMENT", message)))
    error = await failure(provider(google_emulator), request())
    assert error.code is ErrorCode.NO_RESULT
    assert echoed[:32] not in error.message and "[redacted]" in error.message


async def test_text_only_answer_says_what_the_model_said(google_emulator: GoogleState) -> None:
    google_emulator.recorder.script(text_only("I cannot draw that."))
    error = await failure(provider(google_emulator), request())
    assert "I cannot draw that." in error.message and "STOP" in error.message


async def test_rate_limit_is_retried_after_the_retry_info_delay(
    google_emulator: GoogleState,
) -> None:
    google_emulator.recorder.script(rate_limited("7s"))
    error = await failure(provider(google_emulator), request())
    assert error.code is ErrorCode.PROVIDER_ERROR and error.retryable
    assert error.retry_after == 7
    assert "RESOURCE_EXHAUSTED" in error.message


async def test_retry_after_header_wins(google_emulator: GoogleState) -> None:
    answer = rate_limited("7s")
    answer.headers = {"Retry-After": "3"}
    google_emulator.recorder.script(answer)
    error = await failure(provider(google_emulator), request())
    assert error.retry_after == 3


async def test_bad_key_is_a_permanent_auth_error_without_the_key(
    google_emulator: GoogleState,
) -> None:
    error = await failure(provider(google_emulator, key="wrong-secret-key"), request())
    assert error.code is ErrorCode.PROVIDER_ERROR
    assert not error.retryable, "a key does not fix itself"
    assert "GOOGLE_API_KEY" in error.message and "wrong-secret-key" not in error.message
    assert len(google_emulator.recorder.requests) == 1


async def test_connection_refused_is_a_provider_error() -> None:
    down = GoogleProvider("k", f"http://127.0.0.1:{_free_port()}", timeout_s=5)
    error = await failure(down, request())
    assert error.code is ErrorCode.PROVIDER_ERROR and error.retryable


async def test_timeout_is_a_provider_error(google_emulator: GoogleState) -> None:
    google_emulator.delay_s = 2
    slow = GoogleProvider(google_emulator.key, google_emulator.base_url, timeout_s=0.3)
    error = await failure(slow, request())
    assert error.code is ErrorCode.PROVIDER_ERROR and error.retryable
    assert "0.3s" in error.message


async def test_emulator_refuses_a_missing_key_like_the_api(google_emulator: GoogleState) -> None:
    async with httpx.AsyncClient(base_url=google_emulator.base_url) as client:
        response = await client.post(f"/v1beta/models/{MODEL}:generateContent", json={})
    assert response.status_code == 403
    assert response.json()["error"]["status"] == "PERMISSION_DENIED"


def vertex(state: GoogleState) -> GoogleProvider:
    client = genai.Client(
        vertexai=True,
        project="proj-1",
        location="us-central1",
        credentials=Credentials(token=state.token),  # type: ignore[no-untyped-call]
        http_options=types.HttpOptions(
            base_url=state.base_url, retry_options=types.HttpRetryOptions(attempts=1)
        ),
    )
    return GoogleProvider(None, None, vertex_project="proj-1", client=client)


async def test_gemini_on_vertex(google_emulator: GoogleState) -> None:
    spec = {"aspect_ratio": "9:16", "seed": 5, "quality": "hd"}
    result = await vertex(google_emulator).generate(request(spec, model="gemini-3-pro-image"))
    path, body = sent(google_emulator)
    assert path == (
        "/v1beta1/projects/proj-1/locations/us-central1/publishers/google/models/"
        "gemini-3-pro-image:generateContent"
    )
    assert body["generationConfig"]["imageConfig"] == {"aspectRatio": "9:16", "imageSize": "1K"}
    assert result.content_type == "image/png"
    assert result.metadata["ignored_parameters"] == ["quality"]
    assert result.metadata["seed"] == 5


async def test_a_wrong_vertex_token_is_permanent(google_emulator: GoogleState) -> None:
    stale = vertex(google_emulator)  # holds the token the emulator has now...
    google_emulator.token = "another-token"  # ...which then stops being valid
    try:
        error = await failure(stale, request())
    finally:
        google_emulator.token = "vertex-test-token"
    assert error.code is ErrorCode.PROVIDER_ERROR and not error.retryable
    assert "UNAUTHENTICATED" in error.message
