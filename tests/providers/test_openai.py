"""The OpenAI provider through the real `openai` SDK, against the Images API emulator."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import AsyncIterator
from email.utils import formatdate
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.emulators.openai import (
    SERVED,
    SHUT_DOWN,
    OpenAIState,
    _size_error,
    content_policy,
    empty_data,
    insufficient_quota,
    model_not_found,
    moderation_blocked,
    openai_error,
    png,
    rate_limited,
    server_error,
    url_answer,
)
from tests.emulators.recorder import Recorded, Scripted
from tests.emulators.server import _free_port
from worker.core.errors import ErrorCode, GenerationError
from worker.core.images import prepare_mask
from worker.providers.base import ImageRequest, build_request
from worker.providers.openai import OpenAIProvider, gpt_size

# A model served today (the catalogue supplies defaults; the adapter has none).
MODEL = "gpt-image-2.6-flare"
PROMPT = "a red fox in the snow"


_OPEN: list[OpenAIProvider] = []


def provider(state: OpenAIState, key: str | None = None, timeout_s: float = 10) -> OpenAIProvider:
    p = OpenAIProvider(key or state.key, state.url, timeout_s=timeout_s)
    _OPEN.append(p)
    return p


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    yield
    while _OPEN:
        await _OPEN.pop().aclose()


def request(spec: dict[str, Any] | None = None, **kwargs: Any) -> ImageRequest:
    return build_request(
        kwargs.pop("prompt", PROMPT),
        kwargs.pop("model", MODEL),
        spec or {},
        default_side=OpenAIProvider.default_side,
        source=kwargs.pop("source", None),
        mask=kwargs.pop("mask", None),
    )


def api_calls(state: OpenAIState) -> list[Recorded]:
    return [r for r in state.recorder.requests if r.path.startswith("/v1/")]


def sent(state: OpenAIState) -> Recorded:
    calls = api_calls(state)
    assert len(calls) == 1
    return calls[0]


def size_of(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


async def failure(p: OpenAIProvider, req: ImageRequest, edit: bool = False) -> GenerationError:
    with pytest.raises(GenerationError) as caught:
        await (p.edit(req) if edit else p.generate(req))
    return caught.value


def test_size_choice() -> None:
    assert gpt_size(1024, 1024) == "1024x1024"
    assert gpt_size(1200, 800) == "1200x800"  # already valid: sent as asked
    assert gpt_size(1920, 1080) == "1920x1088"  # multiples of 16
    assert gpt_size(4000, 1000) == "3840x1280"  # ratio capped at 3:1, long side at 3840
    assert gpt_size(4096, 4096) == "2880x2880"  # at most 3840x2160 pixels
    assert gpt_size(96, 64) == "992x672"  # grown to the smallest pixel count, ratio kept


@pytest.mark.parametrize("width", [64, 100, 333, 576, 1000, 1080, 1537, 2160, 3001, 4096])
@pytest.mark.parametrize("height", [64, 99, 512, 1024, 1333, 2048, 3840, 4096])
def test_every_chosen_size_is_one_the_api_accepts(width: int, height: int) -> None:
    size = gpt_size(width, height)
    assert _size_error(size) is None, size
    w, h = (int(v) for v in size.split("x"))
    assert (w >= h) is (width >= height) or w == h  # the orientation is kept


async def test_gpt_image_generation(openai_emulator: OpenAIState) -> None:
    spec = {"size": "1200x800", "quality": "hd", "negative_prompt": "blur, text", "seed": 42}
    result = await provider(openai_emulator).generate(request(spec))

    call = sent(openai_emulator)
    assert (call.method, call.path) == ("POST", "/v1/images/generations")
    assert call.headers["authorization"] == f"Bearer {openai_emulator.key}"
    assert call.json == {
        "model": MODEL,
        "prompt": f"{PROMPT}\n\nAvoid: blur, text",
        "size": "1200x800",
        "quality": "high",
        "n": 1,
    }
    assert result.content_type == "image/png"
    assert size_of(result.data) == (1200, 800)
    assert result.metadata["ignored_parameters"] == ["quality", "negative_prompt", "seed"]
    assert result.metadata["negative_prompt_in_prompt"] is True
    assert result.metadata["size"] == "1200x800"
    assert result.metadata["quality"] == "high"
    assert result.metadata["usage"]["total_tokens"] == 4180
    assert "revised_prompt" not in result.metadata and "seed" not in result.metadata


@pytest.mark.parametrize("model", SERVED)
async def test_every_served_model_takes_the_same_parameters(
    openai_emulator: OpenAIState, model: str
) -> None:
    spec = {"size": "1536x864", "quality": "medium"}
    result = await provider(openai_emulator).generate(request(spec, model=model))
    body = sent(openai_emulator).json
    assert body == {
        "model": model,
        "prompt": PROMPT,
        "size": "1536x864",
        "quality": "medium",
        "n": 1,
    }
    assert "response_format" not in body  # GPT image models refuse it: they answer b64_json
    assert size_of(result.data) == (1536, 864)
    assert result.metadata["ignored_parameters"] == []


async def test_exact_request_ignores_nothing(openai_emulator: OpenAIState) -> None:
    spec = {"aspect_ratio": "1:1", "quality": "low"}
    result = await provider(openai_emulator).generate(request(spec, model="gpt-image-2.6-sunburst"))
    assert sent(openai_emulator).json == {
        "model": "gpt-image-2.6-sunburst",
        "prompt": PROMPT,
        "size": "1024x1024",
        "quality": "low",
        "n": 1,
    }
    assert result.metadata["ignored_parameters"] == []
    assert "negative_prompt_in_prompt" not in result.metadata


async def test_aspect_ratio_without_an_exact_size_is_reported(openai_emulator: OpenAIState) -> None:
    result = await provider(openai_emulator).generate(request({"aspect_ratio": "16:9"}))
    # 1024x576 is below the smallest pixel count: grown, and 16 px steps cannot keep 16:9.
    assert sent(openai_emulator).json["size"] == "1088x608"
    assert result.metadata["ignored_parameters"] == ["size", "aspect_ratio"]


async def test_large_sizes_and_the_extra_qualities(openai_emulator: OpenAIState) -> None:
    spec = {"size": "3840x2160", "quality": "max"}
    result = await provider(openai_emulator).generate(request(spec, model="gpt-image-2.5-flare"))
    assert sent(openai_emulator).json["size"] == "3840x2160"
    assert sent(openai_emulator).json["quality"] == "max"
    assert size_of(result.data) == (3840, 2160)
    assert result.metadata["ignored_parameters"] == []


async def test_a_quality_the_model_lacks_is_no_result_sent_once(
    openai_emulator: OpenAIState,
) -> None:
    error = await failure(
        provider(openai_emulator), request({"quality": "max"}, model="gpt-image-2")
    )
    assert error.code is ErrorCode.NO_RESULT and not error.retryable
    assert "quality" in error.message and "invalid_value" in error.message
    assert len(api_calls(openai_emulator)) == 1


async def test_a_url_result_is_downloaded(openai_emulator: OpenAIState) -> None:
    """GPT image models answer base64; an OpenAI-compatible server may answer a URL."""
    openai_emulator.recorder.script(url_answer(openai_emulator, 1024, 1024))
    (stored,) = openai_emulator.files.values()
    result = await provider(openai_emulator).generate(request({"size": "1024x1024"}))

    assert result.data == stored
    assert result.content_type == "image/png"
    assert result.metadata["revised_prompt"] == "A revised, more detailed prompt."
    downloads = [r for r in openai_emulator.recorder.requests if r.method == "GET"]
    assert len(downloads) == 1 and downloads[0].path.startswith("/private/org-emulator/img-")
    assert "authorization" not in downloads[0].headers  # the key stays with OpenAI


async def test_edit_sends_image_and_mask_as_files(openai_emulator: OpenAIState) -> None:
    source = png(96, 64)
    painted = Image.new("RGBA", (96, 64), (0, 0, 0, 0))
    painted.paste((255, 255, 255, 255), (10, 10, 40, 40))
    out = io.BytesIO()
    painted.save(out, format="PNG")
    mask = await prepare_mask(out.getvalue(), (96, 64))

    req = request(
        {"size": "96x64", "quality": "medium"}, prompt="add a hat", source=source, mask=mask
    )
    result = await provider(openai_emulator).edit(req)

    call = sent(openai_emulator)
    assert call.path == "/v1/images/edits"
    assert call.headers["content-type"].startswith("multipart/form-data")
    form = call.form
    assert form["image"]["data"] == source
    assert form["image"]["content_type"] == "image/png"
    assert form["mask"]["data"] == mask
    assert form["mask"]["content_type"] == "image/png"
    assert (form["prompt"], form["model"], form["n"]) == ("add a hat", MODEL, "1")
    assert (form["size"], form["quality"]) == ("992x672", "medium")
    assert "response_format" not in form
    assert size_of(result.data) == (96, 64)  # the emulator answers with the source's size


async def test_image_to_image_uses_the_edit_endpoint_without_mask(
    openai_emulator: OpenAIState,
) -> None:
    source = png(64, 64, image_format="jpeg")
    result = await provider(openai_emulator).generate(
        request(prompt="make it night", source=source)
    )
    call = sent(openai_emulator)
    assert call.path == "/v1/images/edits"
    assert "mask" not in call.form
    assert call.form["image"]["data"] == source
    assert call.form["image"]["content_type"] == "image/jpeg"
    assert call.form["image"]["filename"] == "image.jpg"
    assert call.form["prompt"] == "make it night"
    assert size_of(result.data) == (64, 64)


async def test_edits_need_a_mask(openai_emulator: OpenAIState) -> None:
    missing = await failure(provider(openai_emulator), request(source=png(32, 32)), edit=True)
    assert missing.code is ErrorCode.MASK_MISSING
    assert api_calls(openai_emulator) == []


async def test_output_format_sets_the_content_type(openai_emulator: OpenAIState) -> None:
    webp = png(32, 32, image_format="webp")
    answer = {
        "created": int(time.time()),
        "data": [{"b64_json": base64.b64encode(webp).decode()}],
        "output_format": "webp",
    }
    openai_emulator.recorder.script(Scripted(200, answer))
    result = await provider(openai_emulator).generate(request())
    assert (result.data, result.content_type) == (webp, "image/webp")


SAFETY_USER_ERROR = Scripted(
    400,
    openai_error("Your request was rejected by the safety system.", "image_generation_user_error"),
)
NO_IMAGE = Scripted(200, {"created": 1, "data": [{"revised_prompt": "nothing"}]})
BAD_BASE64 = Scripted(200, {"created": 1, "data": [{"b64_json": "not base64!"}]})


@pytest.mark.parametrize(
    ("answer", "code", "retryable", "retry_after"),
    [
        (content_policy(), ErrorCode.CONTENT_POLICY, False, None),
        (moderation_blocked("input"), ErrorCode.CONTENT_POLICY, False, None),
        (moderation_blocked("output", ("violence",)), ErrorCode.CONTENT_POLICY, False, None),
        (SAFETY_USER_ERROR, ErrorCode.CONTENT_POLICY, False, None),
        (rate_limited("7"), ErrorCode.PROVIDER_ERROR, True, 7.0),
        (rate_limited(None, ms="1500"), ErrorCode.PROVIDER_ERROR, True, 1.5),
        (server_error(), ErrorCode.PROVIDER_ERROR, True, None),
        (
            Scripted(503, openai_error("Overloaded", "server_error"), {"retry-after": "3"}),
            ErrorCode.PROVIDER_ERROR,
            True,
            3.0,
        ),
        (insufficient_quota(), ErrorCode.PROVIDER_ERROR, False, None),
        (model_not_found("gpt-image-1"), ErrorCode.MODEL_UNAVAILABLE, False, None),
        (
            Scripted(400, openai_error("Invalid value: 'x'.", param="size", code="invalid_value")),
            ErrorCode.NO_RESULT,
            False,
            None,
        ),
        (Scripted(422, openai_error("Unprocessable")), ErrorCode.NO_RESULT, False, None),
        (empty_data(), ErrorCode.NO_RESULT, False, None),
        (NO_IMAGE, ErrorCode.NO_RESULT, False, None),
        (BAD_BASE64, ErrorCode.NO_RESULT, False, None),
        (
            Scripted(403, openai_error("Your organization must be verified.")),
            ErrorCode.PROVIDER_ERROR,
            False,
            None,
        ),
        (
            Scripted(401, openai_error("Invalid authorization header.")),
            ErrorCode.PROVIDER_ERROR,
            False,
            None,
        ),
    ],
    ids=[
        "content_policy_violation",
        "moderation_blocked_input",
        "moderation_blocked_output",
        "safety_user_error",
        "429_retry_after",
        "429_retry_after_ms",
        "500",
        "503_retry_after",
        "insufficient_quota",
        "404_model",
        "400_invalid",
        "422",
        "empty_data",
        "item_without_image",
        "bad_base64",
        "403",
        "401",
    ],
)
async def test_errors_map_to_the_catalogue(
    openai_emulator: OpenAIState,
    answer: Scripted,
    code: ErrorCode,
    retryable: bool,
    retry_after: float | None,
) -> None:
    openai_emulator.recorder.script(answer)
    error = await failure(provider(openai_emulator), request())
    assert error.code is code
    assert error.retryable is retryable
    assert error.retry_after == retry_after
    assert len(api_calls(openai_emulator)) == 1  # the SDK itself never retries
    assert openai_emulator.key not in error.message


@pytest.mark.parametrize("model", [*SHUT_DOWN, "gpt-image-9-nonexistent"])
async def test_a_model_openai_does_not_serve_is_model_unavailable_sent_once(
    openai_emulator: OpenAIState, model: str
) -> None:
    error = await failure(provider(openai_emulator), request(model=model))
    assert error.code is ErrorCode.MODEL_UNAVAILABLE
    assert not error.retryable
    assert model in error.message and "model_not_found" in error.message
    assert len(api_calls(openai_emulator)) == 1


async def test_an_edit_with_a_shut_down_model_is_model_unavailable(
    openai_emulator: OpenAIState,
) -> None:
    error = await failure(provider(openai_emulator), request(model="dall-e-2", source=png(32, 32)))
    assert error.code is ErrorCode.MODEL_UNAVAILABLE and not error.retryable
    assert api_calls(openai_emulator)[0].path == "/v1/images/edits"


async def test_retry_after_as_an_http_date(openai_emulator: OpenAIState) -> None:
    when = formatdate(time.time() + 30, usegmt=True)
    openai_emulator.recorder.script(rate_limited(when))
    error = await failure(provider(openai_emulator), request())
    assert error.retryable and error.retry_after is not None and 25 <= error.retry_after <= 31


async def test_bad_key_is_a_permanent_auth_error(openai_emulator: OpenAIState) -> None:
    wrong = "sk-wrong-key-abcdefghijklmnopqrstuvwxyz0123456789"
    error = await failure(provider(openai_emulator, key=wrong), request())
    assert error.code is ErrorCode.PROVIDER_ERROR and not error.retryable
    assert "authentication failed" in error.message and "invalid_api_key" in error.message
    assert wrong not in error.message and wrong[-30:] not in error.message


async def test_url_that_404s_is_result_unreachable(openai_emulator: OpenAIState) -> None:
    openai_emulator.recorder.script(url_answer(openai_emulator, 1024, 1024, missing=True))
    error = await failure(provider(openai_emulator), request())
    assert error.code is ErrorCode.RESULT_UNREACHABLE and error.retryable
    assert error.message.endswith("HTTP 404")


async def test_timeout_is_retryable(openai_emulator: OpenAIState) -> None:
    openai_emulator.delay_s = 2.0
    error = await failure(provider(openai_emulator, timeout_s=0.3), request())
    assert error.code is ErrorCode.PROVIDER_ERROR and error.retryable
    assert "did not answer within 0.3s" in error.message


async def test_connection_refused_is_retryable() -> None:
    closed = OpenAIProvider("sk-test", f"http://127.0.0.1:{_free_port()}/v1", timeout_s=5)
    _OPEN.append(closed)
    error = await failure(closed, request())
    assert error.code is ErrorCode.PROVIDER_ERROR and error.retryable
    assert error.message.startswith(
        "Rate limit or service error during AI processing: cannot reach"
    )


def test_a_missing_key_does_not_stop_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    p = OpenAIProvider(None, "http://127.0.0.1:1/v1", timeout_s=3)
    assert p.client.max_retries == 0 and p.client.timeout == 3


async def test_emulator_refuses_calls_without_a_key(openai_emulator: OpenAIState) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{openai_emulator.url}/images/generations", json={})
    assert response.status_code == 401
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
