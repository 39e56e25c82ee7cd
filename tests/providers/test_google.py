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
    GoogleState,
    blocked_prompt,
    google_error,
    image_safety,
    png,
    rate_limited,
    server_error,
    text_only,
)
from tests.emulators.recorder import Scripted
from tests.emulators.server import _free_port
from worker.errors import ErrorCode, GenerationError
from worker.providers.base import ImageRequest, build_request
from worker.providers.google import GoogleProvider, nearest_ratio

MODEL = "gemini-2.5-flash-image"


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
    assert config["imageConfig"] == {"aspectRatio": "16:9"}
    assert config["seed"] == 42

    assert result.content_type == "image/png"
    with Image.open(io.BytesIO(result.data)) as image:
        assert image.size == (1344 // 16, 768 // 16)
    assert result.metadata["aspect_ratio"] == "16:9"
    assert result.metadata["ignored_parameters"] == []
    assert result.metadata["negative_prompt_in_prompt"] is True
    assert result.metadata["seed"] == 42
    assert result.metadata["model_version"] == MODEL


async def test_exact_size_and_quality_are_reported_as_ignored(
    google_emulator: GoogleState,
) -> None:
    result = await provider(google_emulator).generate(request({"size": "800x600", "quality": "hd"}))
    _, body = sent(google_emulator)
    assert body["generationConfig"]["imageConfig"] == {"aspectRatio": "4:3"}
    assert "seed" not in body["generationConfig"]
    assert body["contents"][0]["parts"] == [{"text": "a red fox in the snow"}]
    assert result.metadata["ignored_parameters"] == ["size", "quality"]
    assert "negative_prompt_in_prompt" not in result.metadata


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


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        (blocked_prompt(), ErrorCode.CONTENT_POLICY),
        (image_safety(), ErrorCode.CONTENT_POLICY),
        (text_only(), ErrorCode.NO_RESULT),
        (server_error(), ErrorCode.PROVIDER_ERROR),
        (
            Scripted(400, google_error(400, "INVALID_ARGUMENT", "Unable to process input image.")),
            ErrorCode.NO_RESULT,
        ),
    ],
)
async def test_answers_map_to_the_catalogue(
    google_emulator: GoogleState, answer: Scripted, code: ErrorCode
) -> None:
    google_emulator.recorder.script(answer)
    error = await failure(provider(google_emulator), request())
    assert error.code is code
    assert error.retryable is (code is ErrorCode.PROVIDER_ERROR)
    assert len(google_emulator.recorder.requests) == 1  # the SDK does not retry on its own


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


async def test_bad_key_is_an_auth_error_without_the_key(google_emulator: GoogleState) -> None:
    error = await failure(provider(google_emulator, key="wrong-secret-key"), request())
    assert error.code is ErrorCode.PROVIDER_ERROR
    assert "GOOGLE_API_KEY" in error.message and "wrong-secret-key" not in error.message


async def test_unknown_model_is_no_result(google_emulator: GoogleState) -> None:
    error = await failure(provider(google_emulator), request(model="dall-e-3"))
    assert error.code is ErrorCode.NO_RESULT and not error.retryable


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


async def test_imagen_needs_vertex(google_emulator: GoogleState) -> None:
    error = await failure(provider(google_emulator), request(model="imagen-4.0-generate-001"))
    assert error.code is ErrorCode.NO_RESULT and "Vertex AI" in error.message
    assert google_emulator.recorder.requests == []


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


@pytest.mark.filterwarnings("ignore:The generate_images method is deprecated")
async def test_imagen_on_vertex_uses_generate_images(google_emulator: GoogleState) -> None:
    spec = {"aspect_ratio": "9:16", "seed": 5, "negative_prompt": "blur", "quality": "hd"}
    result = await vertex(google_emulator).generate(request(spec, model="imagen-4.0-generate-001"))
    path, body = sent(google_emulator)
    assert path == (
        "/v1beta1/projects/proj-1/locations/us-central1/publishers/google/models/"
        "imagen-4.0-generate-001:predict"
    )
    assert body["instances"] == [{"prompt": "a red fox in the snow"}]
    params = body["parameters"]
    assert params["sampleCount"] == 1 and params["aspectRatio"] == "9:16"
    assert params["negativePrompt"] == "blur" and params["seed"] == 5
    assert result.content_type == "image/png"
    assert result.metadata["ignored_parameters"] == ["quality"]
