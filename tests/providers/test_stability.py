"""The Stability provider over httpx, against the Stability REST API emulator."""

from __future__ import annotations

import ast
import base64
import io
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

import worker.providers.stability as stability
from tests.emulators.recorder import Recorded, Scripted
from tests.emulators.server import _free_port
from tests.emulators.stability import (
    StabilityState,
    content_filtered,
    content_moderation,
    image,
    not_found,
    payment_required,
    rate_limited,
    server_error,
    stability_error,
)
from worker.core.errors import ErrorCode, GenerationError
from worker.core.images import check_result, prepare_mask
from worker.providers.base import ImageRequest, build_request
from worker.providers.common import nearest_ratio
from worker.providers.stability import StabilityProvider, endpoint, stability_mask

PROMPT = "a lighthouse at dusk, oil painting"
GENERATE = "/v2beta/stable-image/generate/"
INPAINT = "/v2beta/stable-image/edit/inpaint"
HTML = "<html><head><title>502 Bad Gateway</title></head><body><h1>502</h1></body></html>"

_OPEN: list[StabilityProvider] = []


def provider(
    state: StabilityState, key: str | None = None, timeout_s: float = 10
) -> StabilityProvider:
    p = StabilityProvider(key or state.key, state.base_url, timeout_s=timeout_s)
    _OPEN.append(p)
    return p


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    yield
    while _OPEN:
        await _OPEN.pop().aclose()


def request(
    model: str = "ultra", spec: dict[str, Any] | None = None, **kwargs: Any
) -> ImageRequest:
    return build_request(
        kwargs.pop("prompt", PROMPT),
        model,
        spec or {},
        default_side=StabilityProvider.default_side,
        source=kwargs.pop("source", None),
        mask=kwargs.pop("mask", None),
    )


def sent(state: StabilityState) -> Recorded:
    calls = state.calls()
    assert len(calls) == 1, [c.path for c in calls]
    return calls[0]


def fields(recorded: Recorded) -> dict[str, Any]:
    """The form's text fields (files left out)."""
    return {k: v for k, v in recorded.form.items() if not isinstance(v, dict)}


def decoded(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as picture:
        picture.load()
        return picture


async def failure(
    state: StabilityState, req: ImageRequest, *, edit: bool = False
) -> GenerationError:
    p = provider(state)
    with pytest.raises(GenerationError) as caught:
        await (p.edit(req) if edit else p.generate(req))
    return caught.value


# --- text-to-image: which endpoint, which fields ---------------------------------------------


async def test_ultra_sends_the_form_and_records_the_seed(
    stability_emulator: StabilityState,
) -> None:
    spec = {"size": "1344x768", "seed": 42, "negative_prompt": "fog", "quality": "high"}
    result = await provider(stability_emulator).generate(request("ultra", spec))

    call = sent(stability_emulator)
    assert call.path == GENERATE + "ultra"
    assert call.headers["authorization"] == f"Bearer {stability_emulator.key}"
    assert call.headers["accept"] == "image/*"
    assert call.headers["content-type"].startswith("multipart/form-data")
    assert fields(call) == {
        "prompt": PROMPT,
        "negative_prompt": "fog",
        "seed": "42",
        "aspect_ratio": "16:9",  # 1344x768 is 1.75:1, nearest 16:9
        "output_format": "png",
    }
    assert decoded(result.data).format == "PNG" and result.content_type == "image/png"
    width, height = decoded(result.data).size
    assert abs(width / height - 16 / 9) < 0.05
    assert result.metadata == {
        "endpoint": "ultra",
        "aspect_ratio": "16:9",
        "seed": 42,
        "finish_reason": "SUCCESS",
        # 1344x768 is not exactly 16:9, and Stability has no quality setting.
        "ignored_parameters": ["quality", "size"],
    }


async def test_core_takes_the_aspect_ratio_and_reports_the_seed_it_chose(
    stability_emulator: StabilityState,
) -> None:
    result = await provider(stability_emulator).generate(request("core", {"aspect_ratio": "9:16"}))

    call = sent(stability_emulator)
    assert call.path == GENERATE + "core"
    assert fields(call) == {"prompt": PROMPT, "aspect_ratio": "9:16", "output_format": "png"}
    assert stability_emulator.last_seed is not None
    assert result.metadata["seed"] == stability_emulator.last_seed
    assert result.metadata["ignored_parameters"] == []
    width, height = decoded(result.data).size
    assert height > width


@pytest.mark.parametrize("model", ["sd3.5-large", "sd3.5-large-turbo", "sd3.5-medium"])
async def test_any_other_model_goes_to_sd3_with_its_id(
    stability_emulator: StabilityState, model: str
) -> None:
    result = await provider(stability_emulator).generate(
        request(model, {"size": "1024x1024", "seed": 7})
    )

    call = sent(stability_emulator)
    assert call.path == GENERATE + "sd3"
    assert fields(call) == {
        "prompt": PROMPT,
        "seed": "7",
        "aspect_ratio": "1:1",
        "output_format": "png",
        "model": model,
    }
    assert result.metadata["endpoint"] == "sd3" and result.metadata["seed"] == 7


def test_the_endpoint_rule() -> None:
    assert endpoint("ultra") == "ultra"
    assert endpoint("core") == "core"
    # Ids are data: whatever the catalogue names goes to SD3 as its `model` field.
    assert endpoint("sd3.5-large") == "sd3"
    assert endpoint("a-model-published-tomorrow") == "sd3"


def test_the_adapter_names_no_model_id() -> None:
    """Model ids live in the catalogue; the adapter's only "sd3" is the endpoint's name."""
    source = Path(stability.__file__).read_text()
    literals = [
        node.value
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]
    assert not [s for s in literals if re.match(r"^(sd3[.-]|sd3\.5|stable-image-)", s)]


@pytest.mark.parametrize(
    ("width", "height", "ratio"),
    [
        (1024, 1024, "1:1"),
        (1920, 1080, "16:9"),
        (1080, 1920, "9:16"),
        (2560, 1080, "21:9"),
        (1000, 800, "5:4"),
        (800, 1000, "4:5"),
        (1536, 1024, "3:2"),
        (4000, 1000, "21:9"),  # beyond the widest: the widest
    ],
)
def test_nearest_ratio(width: int, height: int, ratio: str) -> None:
    assert nearest_ratio(width, height, stability.RATIOS) == ratio


async def test_an_unoffered_aspect_ratio_becomes_the_nearest(
    stability_emulator: StabilityState,
) -> None:
    result = await provider(stability_emulator).generate(request("core", {"aspect_ratio": "4:3"}))
    assert fields(sent(stability_emulator))["aspect_ratio"] == "5:4"
    assert result.metadata["ignored_parameters"] == ["aspect_ratio", "size"]


async def test_a_seed_out_of_stabilitys_range_is_not_sent(
    stability_emulator: StabilityState,
) -> None:
    result = await provider(stability_emulator).generate(request("core", {"seed": 2**32}))
    assert "seed" not in fields(sent(stability_emulator))
    assert "seed" in result.metadata["ignored_parameters"]


# --- both answer styles ----------------------------------------------------------------------


async def test_a_json_answer_is_read_like_an_image_answer(
    stability_emulator: StabilityState,
) -> None:
    stability_emulator.always_json = True
    result = await provider(stability_emulator).generate(request("ultra", {"seed": 99}))

    assert decoded(result.data).format == "PNG"
    assert result.metadata["seed"] == 99 and result.metadata["finish_reason"] == "SUCCESS"


async def test_a_json_answer_with_a_jpeg_inside(stability_emulator: StabilityState) -> None:
    data = image(64, 64, "jpeg")
    body = json.dumps({"image": base64.b64encode(data).decode(), "finish_reason": "SUCCESS"})
    stability_emulator.recorder.script(
        Scripted(200, body, content_type="application/json; type=image/jpeg")
    )
    result = await provider(stability_emulator).generate(request("core"))
    assert result.data == data and result.content_type == "image/jpeg"
    assert "seed" not in result.metadata


# --- image-to-image --------------------------------------------------------------------------


async def test_image_to_image_on_ultra(stability_emulator: StabilityState) -> None:
    source = image(96, 64)
    result = await provider(stability_emulator).generate(
        request("ultra", {"aspect_ratio": "1:1"}, source=source)
    )

    call = sent(stability_emulator)
    assert call.path == GENERATE + "ultra"
    assert fields(call) == {"prompt": PROMPT, "output_format": "png", "strength": "0.6"}
    assert call.form["image"]["data"] == source
    assert call.form["image"]["content_type"] == "image/png"
    assert decoded(result.data).size == (96, 64)
    assert result.metadata["strength"] == 0.6
    assert result.metadata["ignored_parameters"] == ["aspect_ratio"]


async def test_image_to_image_on_sd3(stability_emulator: StabilityState) -> None:
    source = image(64, 64, "jpeg")
    await provider(stability_emulator).generate(request("sd3.5-medium", source=source))

    call = sent(stability_emulator)
    assert call.path == GENERATE + "sd3"
    assert fields(call) == {
        "prompt": PROMPT,
        "output_format": "png",
        "model": "sd3.5-medium",
        "mode": "image-to-image",
        "strength": "0.6",
    }
    assert call.form["image"]["content_type"] == "image/jpeg"


async def test_core_refuses_a_source_without_a_call(stability_emulator: StabilityState) -> None:
    error = await failure(stability_emulator, request("core", source=image(64, 64)))
    assert error.code == ErrorCode.NO_RESULT and not error.retryable
    assert stability_emulator.calls() == []


# --- inpainting ------------------------------------------------------------------------------


def user_mask(width: int, height: int) -> bytes:
    """A user's mask: painted white over the left half (change there), transparent elsewhere."""
    picture = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    picture.paste((255, 255, 255, 255), (0, 0, width // 2, height))
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()


async def test_inpaint_sends_the_mask_white_where_the_image_changes(
    stability_emulator: StabilityState,
) -> None:
    source = image(80, 40)
    ours = await prepare_mask(user_mask(80, 40), (80, 40))
    # Our convention: the area to repaint is transparent.
    assert decoded(ours).getchannel("A").getpixel((10, 20)) == 0
    spec = {"seed": 5, "negative_prompt": "people"}
    result = await provider(stability_emulator).edit(
        request("ultra", spec, source=source, mask=ours)
    )

    call = sent(stability_emulator)
    assert call.path == INPAINT  # one endpoint, whatever the model
    assert fields(call) == {
        "prompt": PROMPT,
        "negative_prompt": "people",
        "seed": "5",
        "output_format": "png",
    }
    assert call.form["image"]["data"] == source
    received = decoded(call.form["mask"]["data"])
    assert received.format == "PNG" and received.mode == "L" and received.size == (80, 40)
    # White where our mask was transparent (the painted left half), black where it was opaque.
    assert {received.getpixel((x, y)) for x in range(40) for y in range(40)} == {255}
    assert {received.getpixel((x, y)) for x in range(40, 80) for y in range(40)} == {0}
    assert result.metadata["endpoint"] == "inpaint" and result.metadata["seed"] == 5
    assert decoded(result.data).size == (80, 40)


def test_the_mask_conversion_keeps_only_fully_transparent_pixels_white() -> None:
    picture = Image.new("RGBA", (3, 1))
    picture.putdata([(0, 0, 0, 0), (255, 255, 255, 128), (0, 0, 0, 255)])
    out = io.BytesIO()
    picture.save(out, format="PNG")
    converted = decoded(stability_mask(out.getvalue()))
    assert [converted.getpixel((x, 0)) for x in range(3)] == [255, 0, 0]


async def test_an_edit_without_a_mask(stability_emulator: StabilityState) -> None:
    error = await failure(stability_emulator, request(source=image(64, 64)), edit=True)
    assert error.code == ErrorCode.MASK_MISSING
    assert stability_emulator.calls() == []


async def test_an_unreadable_mask(stability_emulator: StabilityState) -> None:
    req = request(source=image(64, 64), mask=b"\x89PNG\r\n\x1a\nnot really")
    error = await failure(stability_emulator, req, edit=True)
    assert error.code == ErrorCode.MASK_INVALID and not error.retryable
    assert stability_emulator.calls() == []


# --- refusals and errors ---------------------------------------------------------------------


async def test_content_moderation_is_a_refusal_sent_once(
    stability_emulator: StabilityState,
) -> None:
    stability_emulator.recorder.script(content_moderation())
    error = await failure(stability_emulator, request("ultra"))
    assert error.code == ErrorCode.CONTENT_POLICY and not error.retryable
    assert "content_moderation" in error.message and "flagged" in error.message
    assert len(stability_emulator.calls()) == 1


@pytest.mark.parametrize("as_json", [False, True], ids=["headers", "json"])
async def test_a_filtered_result_is_a_refusal(
    stability_emulator: StabilityState, as_json: bool
) -> None:
    stability_emulator.recorder.script(content_filtered(as_json=as_json))
    error = await failure(stability_emulator, request("sd3.5-large"))
    assert error.code == ErrorCode.CONTENT_POLICY and not error.retryable


async def test_a_filtered_inpaint_is_a_refusal(stability_emulator: StabilityState) -> None:
    stability_emulator.recorder.script(content_filtered())
    mask = await prepare_mask(user_mask(64, 64), (64, 64))
    error = await failure(stability_emulator, request(source=image(64, 64), mask=mask), edit=True)
    assert error.code == ErrorCode.CONTENT_POLICY


async def test_rate_limited_is_retried_after_what_stability_says(
    stability_emulator: StabilityState,
) -> None:
    stability_emulator.recorder.script(rate_limited("10"))
    error = await failure(stability_emulator, request("core"))
    assert error.code == ErrorCode.PROVIDER_ERROR and error.retryable
    assert error.retry_after == 10.0
    # The retry (the job queue's) then succeeds.
    result = await provider(stability_emulator).generate(request("core"))
    assert decoded(result.data).format == "PNG"


async def test_rate_limited_without_retry_after(stability_emulator: StabilityState) -> None:
    stability_emulator.recorder.script(rate_limited(None))
    error = await failure(stability_emulator, request("core"))
    assert error.retryable and error.retry_after is None


async def test_a_wrong_key_is_permanent(stability_emulator: StabilityState) -> None:
    wrong = "sk-wrong-0123456789abcdefghijklmnopqrstuvwxyz"
    p = provider(stability_emulator, key=wrong)
    with pytest.raises(GenerationError) as caught:
        await p.generate(request("ultra"))
    error = caught.value
    assert error.code == ErrorCode.PROVIDER_ERROR and not error.retryable
    assert "STABILITY_API_KEY" in error.message and wrong not in error.message
    assert sent(stability_emulator).headers["authorization"] == f"Bearer {wrong}"


async def test_no_key_is_permanent(stability_emulator: StabilityState) -> None:
    p = StabilityProvider(None, stability_emulator.base_url, timeout_s=10)
    _OPEN.append(p)
    with pytest.raises(GenerationError) as caught:
        await p.generate(request("ultra"))
    assert not caught.value.retryable
    assert "authorization" not in sent(stability_emulator).headers


async def test_a_403_that_is_not_moderation_is_permanent(
    stability_emulator: StabilityState,
) -> None:
    stability_emulator.recorder.script(stability_error(403, "forbidden", "no access"))
    error = await failure(stability_emulator, request("ultra"))
    assert error.code == ErrorCode.PROVIDER_ERROR and not error.retryable


async def test_a_404_is_model_unavailable(stability_emulator: StabilityState) -> None:
    stability_emulator.recorder.script(not_found())
    error = await failure(stability_emulator, request("sd3.5-large-turbo"))
    assert error.code == ErrorCode.MODEL_UNAVAILABLE and not error.retryable
    assert "sd3.5-large-turbo" in error.message
    assert len(stability_emulator.calls()) == 1


async def test_out_of_credits_is_permanent(stability_emulator: StabilityState) -> None:
    stability_emulator.recorder.script(payment_required())
    error = await failure(stability_emulator, request("ultra"))
    assert error.code == ErrorCode.PROVIDER_ERROR and not error.retryable
    assert "credits" in error.message


async def test_a_bad_request_is_no_result_with_stabilitys_reason(
    stability_emulator: StabilityState,
) -> None:
    # A model the API does not know fails its validation (the emulator's, like the API's).
    error = await failure(stability_emulator, request("sd9-imaginary"))
    assert error.code == ErrorCode.NO_RESULT and not error.retryable
    assert "bad_request" in error.message and "model: must be one of" in error.message


@pytest.mark.parametrize("status", [413, 422])
async def test_other_client_errors_are_no_result(
    stability_emulator: StabilityState, status: int
) -> None:
    stability_emulator.recorder.script(stability_error(status, "invalid", "too big or bad"))
    error = await failure(stability_emulator, request("core"))
    assert error.code == ErrorCode.NO_RESULT and not error.retryable


async def test_a_server_error_is_retried(stability_emulator: StabilityState) -> None:
    stability_emulator.recorder.script(server_error())
    error = await failure(stability_emulator, request("core"))
    assert error.code == ErrorCode.PROVIDER_ERROR and error.retryable


async def test_secrets_in_stabilitys_messages_are_redacted(
    stability_emulator: StabilityState,
) -> None:
    token = "sk-" + "A1b2C3d4" * 6
    stability_emulator.recorder.script(stability_error(400, "bad_request", f"bad key {token}"))
    error = await failure(stability_emulator, request("core"))
    assert token not in error.message and "[redacted]" in error.message


# --- garbage ---------------------------------------------------------------------------------

TRUNCATED_JSON = '{"image": "iVBORw0KGgo'
GARBAGE: list[tuple[str, Scripted, ErrorCode, bool]] = [
    (
        "HTML with a 200",
        Scripted(200, HTML, content_type="text/html"),
        ErrorCode.PROVIDER_ERROR,
        True,
    ),
    (
        "HTML error page",
        Scripted(502, HTML, content_type="text/html"),
        ErrorCode.PROVIDER_ERROR,
        True,
    ),
    ("HTML 400", Scripted(400, HTML, content_type="text/html"), ErrorCode.NO_RESULT, False),
    ("truncated JSON", Scripted(200, TRUNCATED_JSON), ErrorCode.PROVIDER_ERROR, True),
    ("JSON of the wrong shape", Scripted(200, {"artifacts": []}), ErrorCode.NO_RESULT, False),
    ("invalid base64", Scripted(200, {"image": "not*base64"}), ErrorCode.NO_RESULT, False),
    ("an empty image", Scripted(200, b"", content_type="image/png"), ErrorCode.NO_RESULT, False),
    (
        "an unknown finish reason",
        Scripted(200, image(8, 8), {"finish-reason": "ERROR"}, content_type="image/png"),
        ErrorCode.NO_RESULT,
        False,
    ),
    ("error JSON of another shape", Scripted(500, {"errors": "x"}), ErrorCode.PROVIDER_ERROR, True),
    (
        "an octet stream",
        Scripted(200, b"\x00\x01", content_type="application/octet-stream"),
        ErrorCode.PROVIDER_ERROR,
        True,
    ),
]


@pytest.mark.parametrize(
    ("case", "answer", "code", "retryable"), GARBAGE, ids=[g[0] for g in GARBAGE]
)
async def test_garbage_answers(
    stability_emulator: StabilityState,
    case: str,
    answer: Scripted,
    code: ErrorCode,
    retryable: bool,
) -> None:
    stability_emulator.recorder.script(answer)
    error = await failure(stability_emulator, request("core"))
    assert (error.code, error.retryable) == (code, retryable), error.message


async def test_a_truncated_image_fails_at_the_result_gate(
    stability_emulator: StabilityState,
) -> None:
    cut = image(256, 256)[:100]
    stability_emulator.recorder.script(Scripted(200, cut, content_type="image/png"))
    result = await provider(stability_emulator).generate(request("core"))
    with pytest.raises(GenerationError) as caught:
        await check_result(result.data)
    assert caught.value.code == ErrorCode.NO_RESULT


async def test_an_answer_over_the_cap_is_refused(
    stability_emulator: StabilityState, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stability, "MAX_ANSWER_BYTES", 1000)
    stability_emulator.recorder.script(Scripted(200, bytes(5000), content_type="image/png"))
    error = await failure(stability_emulator, request("core"))
    assert error.code == ErrorCode.NO_RESULT and "over 1000 bytes" in error.message


async def test_a_connection_cut_mid_answer() -> None:
    def cut(_: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message")

    p = StabilityProvider(
        "key",
        "http://stability.test",
        timeout_s=5,
        client=httpx.AsyncClient(transport=httpx.MockTransport(cut)),
    )
    _OPEN.append(p)
    with pytest.raises(GenerationError) as caught:
        await p.generate(request("core"))
    assert caught.value.code == ErrorCode.PROVIDER_ERROR and caught.value.retryable
    assert "RemoteProtocolError" in caught.value.message


async def test_nobody_listening() -> None:
    p = StabilityProvider("key", f"http://127.0.0.1:{_free_port()}", timeout_s=5)
    _OPEN.append(p)
    with pytest.raises(GenerationError) as caught:
        await p.generate(request("core"))
    assert caught.value.code == ErrorCode.PROVIDER_ERROR and caught.value.retryable


async def test_a_slow_answer_times_out(stability_emulator: StabilityState) -> None:
    stability_emulator.delay_s = 1.5
    p = provider(stability_emulator, timeout_s=0.3)
    with pytest.raises(GenerationError) as caught:
        await p.generate(request("core"))
    error = caught.value
    assert error.code == ErrorCode.PROVIDER_ERROR and error.retryable
    assert "within 0.3s" in error.message
