"""An emulator of OpenAI's Images API as it answers today (read 2026-12-02, docs/providers.md),
as the `openai` SDK calls it.

- `POST /v1/images/generations` (JSON) and `POST /v1/images/edits` (multipart: `image`, optional
  `mask`, `prompt`, `model`, `size`, ...), behind `Authorization: Bearer <key>`;
- `GET /private/org-emulator/img-<id>.png`: where scripted `url` results live (no auth; an
  unknown id is a 404).

Only the GPT image models served today answer; a shut-down model (`SHUT_DOWN`) or an unknown one
is a 404 `model_not_found`. Answers have the SDK's `ImagesResponse` shape with `b64_json` and a
real image of the requested size (for edits, of the source's size); errors are
`{"error": {"message", "type", "param", "code"}}` with the real status. Parameters are
validated as the API does (sizes, qualities, `response_format` refused). Tests script the next
answers with `state.recorder.script(moderation_blocked(), ...)`.
"""

from __future__ import annotations

import asyncio
import base64
import io
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from litestar import Litestar, Request, Response, route
from litestar.params import FromPath
from PIL import Image

from tests.emulators.recorder import Recorder, Scripted, read_image, record

# GPT image models served on 2026-12-02 (OpenAI's API reference and model pages).
SERVED = (
    "gpt-image-2",
    "gpt-image-2-2026-04-21",
    "gpt-image-2.5-sunburst",
    "gpt-image-2.5-sunburst-2026-09-08",
    "gpt-image-2.5-flare",
    "gpt-image-2.5-flare-2026-09-08",
    "gpt-image-2.6-sunburst",
    "gpt-image-2.6-flare",
)
# Shut down, with the date (OpenAI's deprecations page).
SHUT_DOWN = {
    "gpt-image-1.5": "2026-12-01",
    "gpt-image-1.5-2025-12-16": "2026-12-01",
    "gpt-image-1-mini": "2026-12-01",
    "chatgpt-image-latest": "2026-12-01",
    "gpt-image-1": "2026-10-23",
    "dall-e-3": "2026-05-12",
    "dall-e-2": "2026-05-12",
}
QUALITIES = ("low", "medium", "high", "auto")
# `xhigh` and `max` exist on the 2.5 and 2.6 models only (SDK docstring; third-party for 2.6).
EXTENDED_QUALITIES = ("xhigh", "max")
OUTPUT_FORMATS = ("png", "jpeg", "webp")
MIN_PIXELS, MAX_PIXELS, MAX_LONG = 655_360, 3840 * 2160, 3840
_SIZE = re.compile(r"^(\d{2,5})x(\d{2,5})$")
_BLOB = re.compile(r"^private/org-emulator/img-([0-9a-f]{32})\.png$")
SAFETY_MESSAGE = (
    "Your request was rejected by the safety system. If you believe this is an error, contact "
    "us at help.openai.com and include the request ID req_0123456789abcdef. "
    "safety_violations=[{categories}]."
)
LEGACY_SAFETY_MESSAGE = (
    "Your request was rejected as a result of our safety system. Your prompt may contain text "
    "that is not allowed by our safety system."
)


@dataclass
class OpenAIState:
    key: str = "sk-emulator-0123456789abcdefghijklmnopqrstuvwxyz"
    recorder: Recorder = field(default_factory=Recorder)
    base_url: str = ""  # http://127.0.0.1:PORT
    delay_s: float = 0.0  # how long each API answer takes (timeouts)
    files: dict[str, bytes] = field(default_factory=dict)  # url results, by id

    @property
    def url(self) -> str:
        """The SDK's base_url."""
        return f"{self.base_url}/v1"

    def store(self, data: bytes) -> str:
        """Keeps `data` and returns the URL it is served at."""
        file_id = uuid.uuid4().hex
        self.files[file_id] = data
        return f"{self.base_url}/private/org-emulator/img-{file_id}.png"


def png(width: int, height: int, image_format: str = "png") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (30, 160, 110)).save(out, format=image_format.upper())
    return out.getvalue()


def openai_error(
    message: str,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def rate_limited(retry_after: str | None = "7", *, ms: str | None = None) -> Scripted:
    headers = {"x-ratelimit-limit-requests": "5", "x-ratelimit-remaining-requests": "0"}
    headers |= {"retry-after": retry_after} if retry_after is not None else {}
    headers |= {"retry-after-ms": ms} if ms is not None else {}
    message = (
        "Rate limit reached for gpt-image-2.6-flare in organization org-emulator on images per "
        "minute (IPM): Limit 5, Used 5, Requested 1. Please try again in 7s."
    )
    return Scripted(429, openai_error(message, "requests", None, "rate_limit_exceeded"), headers)


def insufficient_quota() -> Scripted:
    message = "You exceeded your current quota, please check your plan and billing details."
    return Scripted(429, openai_error(message, "insufficient_quota", None, "insufficient_quota"))


def server_error() -> Scripted:
    message = "The server had an error while processing your request. Sorry about that!"
    return Scripted(500, openai_error(message, "server_error"))


def content_policy() -> Scripted:
    """The legacy refusal (`content_policy_violation`, from the DALL·E days)."""
    return Scripted(400, openai_error(LEGACY_SAFETY_MESSAGE, code="content_policy_violation"))


def moderation_blocked(stage: str = "input", categories: tuple[str, ...] = ("sexual",)) -> Scripted:
    """Today's refusal: 400 `moderation_blocked`, with the stage (`input` for the prompt,
    `output` for the image) and the categories."""
    body = openai_error(
        SAFETY_MESSAGE.format(categories=", ".join(categories)),
        "image_generation_user_error",
        None,
        "moderation_blocked",
    )
    body["error"]["moderation_details"] = {
        "moderation_stage": stage,
        "categories": list(categories),
    }
    return Scripted(400, body)


def _no_model(model: str) -> dict[str, Any]:
    if model in SHUT_DOWN:
        message = (
            f"The model `{model}` has been deprecated. Learn more: "
            "https://developers.openai.com/api/docs/deprecations"
        )
    else:
        message = f"The model `{model}` does not exist or you do not have access to it."
    return openai_error(message, code="model_not_found")


def model_not_found(model: str) -> Scripted:
    return Scripted(404, _no_model(model))


def empty_data() -> Scripted:
    return Scripted(200, {"created": int(time.time()), "data": []})


def url_answer(state: OpenAIState, width: int, height: int, *, missing: bool = False) -> Scripted:
    """An answer with a `url` item served by the emulator (a 404 when `missing`): what an
    OpenAI-compatible server may send; OpenAI's GPT image models never do."""
    url = state.store(png(width, height))
    if missing:
        state.files.clear()
    item = {"url": url, "revised_prompt": "A revised, more detailed prompt."}
    return Scripted(200, {"created": int(time.time()), "data": [item]})


def _size_error(size: str) -> str | None:
    """Why the API would refuse `size`, or None: `auto`, or WIDTHxHEIGHT with both sides
    multiples of 16, a ratio from 1:3 to 3:1 and the pixel and edge limits."""
    if size == "auto":
        return None
    if (match := _SIZE.match(size)) is None:
        return f"Invalid value: '{size}'. Expected 'auto' or WIDTHxHEIGHT."
    w, h = int(match[1]), int(match[2])
    if w % 16 or h % 16:
        return f"Invalid size '{size}': width and height must be multiples of 16."
    if max(w, h) > 3 * min(w, h):
        return f"Invalid size '{size}': the aspect ratio must be between 1:3 and 3:1."
    if not MIN_PIXELS <= w * h <= MAX_PIXELS or max(w, h) > MAX_LONG:
        return f"Invalid size '{size}': outside the model's pixel and edge limits."
    return None


def _qualities(model: str) -> tuple[str, ...]:
    extended = model.startswith(("gpt-image-2.5-", "gpt-image-2.6-"))
    return QUALITIES + (EXTENDED_QUALITIES if extended else ())


def _check(model: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
    """The API's validation: (status, error body), or None."""
    if not model:
        message = "Missing required parameter: 'model'."
        return 400, openai_error(message, param="model", code="missing_required_parameter")
    if model not in SERVED:
        return 404, _no_model(model)
    if not isinstance(params.get("prompt"), str) or not params["prompt"]:
        message = "Missing required parameter: 'prompt'."
        return 400, openai_error(message, param="prompt", code="missing_required_parameter")
    for legacy in ("response_format", "style"):
        if legacy in params:
            message = f"Unknown parameter: '{legacy}'."
            return 400, openai_error(message, param=legacy, code="unknown_parameter")
    if (size := params.get("size")) is not None and (problem := _size_error(str(size))):
        return 400, openai_error(problem, param="size", code="invalid_value")
    qualities = _qualities(model)
    if (quality := params.get("quality")) is not None and quality not in qualities:
        message = f"Invalid value: '{quality}'. Supported values are: {', '.join(qualities)}."
        return 400, openai_error(message, param="quality", code="invalid_value")
    output_format = params.get("output_format")
    if output_format is not None and output_format not in OUTPUT_FORMATS:
        message = f"Invalid value: '{output_format}'. Supported values are: png, jpeg, webp."
        return 400, openai_error(message, param="output_format", code="invalid_value")
    n = int(params.get("n") or 1)
    if not 1 <= n <= 10:
        return 400, openai_error(f"Invalid value for 'n': {n}.", param="n", code="invalid_value")
    return None


def _answer(params: dict[str, Any], size: tuple[int, int]) -> dict[str, Any]:
    image_format = str(params.get("output_format") or "png")
    data = png(*size, image_format=image_format)
    item = {"b64_json": base64.b64encode(data).decode()}
    quality = params.get("quality")
    tokens = {"input_tokens": 20, "output_tokens": 4160}
    return {
        "created": int(time.time()),
        "data": [item] * int(params.get("n") or 1),
        "background": "opaque",
        "output_format": image_format,
        "quality": quality if quality not in (None, "auto") else "medium",
        "size": f"{size[0]}x{size[1]}",
        "usage": {
            **tokens,
            "total_tokens": 4180,
            "input_tokens_details": {"image_tokens": 0, "text_tokens": 20},
            "output_tokens_details": {"image_tokens": 4160, "text_tokens": 0},
        },
    }


def _dimensions(size: Any) -> tuple[int, int]:
    match = _SIZE.match(str(size or ""))
    return (int(match[1]), int(match[2])) if match else (1024, 1024)


def _json(
    status: int, body: bytes | str | dict[str, Any], headers: dict[str, str] | None = None
) -> Response[Any]:
    return Response(body, status_code=status, headers=headers or {}, media_type="application/json")


def _edit(form: dict[str, Any]) -> Response[Any]:
    model = str(form.get("model") or "")
    params = {k: v for k, v in form.items() if not isinstance(v, dict)}
    if (error := _check(model, params)) is not None:
        return _json(*error)
    source = read_image(form.get("image", form.get("image[]")))
    if source is None:
        message = "Invalid image file or mode for image 1, please check your image file."
        return _json(400, openai_error(message, param="image", code="invalid_image_file"))
    if "mask" in form:
        mask = read_image(form["mask"])
        if mask is None or mask.format != "PNG" or mask.size != source.size:
            message = "Invalid mask image: it must be a PNG with the same dimensions as the image."
            return _json(400, openai_error(message, param="mask", code="invalid_image"))
    return _json(200, _answer(params, source.size))


def build_openai_emulator(state: OpenAIState) -> Litestar:
    @route("/{rest:path}", http_method=["GET", "POST"])
    async def dispatch(request: Request[Any, Any, Any], rest: FromPath[str]) -> Response[Any]:
        path = rest.strip("/")
        recorded = await record(request)
        state.recorder.requests.append(recorded)
        if request.method == "GET" and (blob := _BLOB.match(path)):
            if (data := state.files.get(blob[1])) is None:
                xml = '<?xml version="1.0"?><Error><Code>BlobNotFound</Code></Error>'
                return Response(xml, status_code=404, media_type="application/xml")
            return Response(data, status_code=200, media_type="image/png")
        if request.method != "POST" or path not in ("v1/images/generations", "v1/images/edits"):
            message = f"Invalid URL ({request.method} /{path})"
            return _json(404, openai_error(message))
        authorization = request.headers.get("authorization", "")
        if not authorization.startswith("Bearer ") or not authorization[7:].strip():
            message = (
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
            return _json(401, openai_error(message))
        if authorization[7:] != state.key:
            given = authorization[7:]
            masked = f"{given[:3]}{'*' * max(0, len(given) - 7)}{given[-4:]}"
            message = f"Incorrect API key provided: {masked}. You can find your API key at https://platform.openai.com/account/api-keys."
            return _json(401, openai_error(message, code="invalid_api_key"))
        await asyncio.sleep(state.delay_s)
        if (scripted := state.recorder.next_scripted()) is not None:
            return Response(
                scripted.body,
                status_code=scripted.status,
                headers=scripted.headers,
                media_type=scripted.content_type,
            )
        if path.endswith("edits"):
            return _edit(recorded.form)
        body = recorded.json if isinstance(recorded.json, dict) else {}
        if (error := _check(str(body.get("model") or ""), body)) is not None:
            return _json(*error)
        size = body.get("size") or "auto"
        return _json(200, _answer(body, _dimensions("1024x1024" if size == "auto" else size)))

    return Litestar(route_handlers=[dispatch], openapi_config=None)
