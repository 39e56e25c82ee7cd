"""An emulator of OpenAI's Images API, as the `openai` SDK calls it.

- `POST /v1/images/generations` (JSON) and `POST /v1/images/edits` (multipart: `image`, optional
  `mask`, `prompt`, `model`, `size`, ...), behind `Authorization: Bearer <key>`;
- `GET /private/org-emulator/img-<id>.png`: where `url` results live (like DALL·E's blob URLs,
  no auth; an unknown id is a 404).

Answers have the SDK's `ImagesResponse` shape with a real PNG of the requested size (for edits,
of the source's size); errors are `{"error": {"message", "type", "param", "code"}}` with the
real status. Parameters are validated per model as the API does (sizes, qualities,
`response_format` refused by GPT image models). Tests script the next answers with
`state.recorder.script(rate_limited(), ...)`.
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
from litestar.datastructures import UploadFile
from litestar.params import FromPath
from PIL import Image, UnidentifiedImageError

from tests.emulators.recorder import Recorded, Recorder, Scripted

GPT_SIZES = ("1024x1024", "1024x1536", "1536x1024", "auto")
SIZES = {
    "dall-e-2": ("256x256", "512x512", "1024x1024"),
    "dall-e-3": ("1024x1024", "1792x1024", "1024x1792"),
}
QUALITIES = {
    "gpt": ("low", "medium", "high", "auto"),
    "dall-e-3": ("standard", "hd"),
    "dall-e-2": ("standard",),
}
_FLEXIBLE = re.compile(r"^(\d{2,4})x(\d{2,4})$")
_BLOB = re.compile(r"^private/org-emulator/img-([0-9a-f]{32})\.png$")
SAFETY_MESSAGE = (
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
        "Rate limit reached for gpt-image-1 in organization org-emulator on images per minute "
        "(IPM): Limit 5, Used 5, Requested 1. Please try again in 7s."
    )
    return Scripted(429, openai_error(message, "requests", None, "rate_limit_exceeded"), headers)


def insufficient_quota() -> Scripted:
    message = "You exceeded your current quota, please check your plan and billing details."
    return Scripted(429, openai_error(message, "insufficient_quota", None, "insufficient_quota"))


def server_error() -> Scripted:
    message = "The server had an error while processing your request. Sorry about that!"
    return Scripted(500, openai_error(message, "server_error"))


def content_policy() -> Scripted:
    """DALL·E's refusal."""
    return Scripted(400, openai_error(SAFETY_MESSAGE, code="content_policy_violation"))


def moderation_blocked() -> Scripted:
    """GPT image models' refusal."""
    return Scripted(
        400, openai_error(SAFETY_MESSAGE, "image_generation_user_error", None, "moderation_blocked")
    )


def _no_model(model: str) -> dict[str, Any]:
    message = f"The model `{model}` does not exist or you do not have access to it."
    return openai_error(message, code="model_not_found")


def model_not_found(model: str) -> Scripted:
    return Scripted(404, _no_model(model))


def empty_data() -> Scripted:
    return Scripted(200, {"created": int(time.time()), "data": []})


def url_answer(state: OpenAIState, width: int, height: int, *, missing: bool = False) -> Scripted:
    """A DALL·E answer with a `url` item served by the emulator (a 404 when `missing`)."""
    url = state.store(png(width, height))
    if missing:
        state.files.clear()
    item = {"url": url, "revised_prompt": "A revised, more detailed prompt."}
    return Scripted(200, {"created": int(time.time()), "data": [item]})


def _family(model: str) -> str:
    return model if model in ("dall-e-2", "dall-e-3") else "gpt"


def _flexible(model: str) -> bool:
    return model == "gpt-image-2" or model.startswith(("gpt-image-2-", "gpt-image-2.5-"))


def _size_error(model: str, size: str) -> str | None:
    """Why the API would refuse `size` for `model`, or None."""
    if _flexible(model) and (match := _FLEXIBLE.match(size)):
        w, h = int(match[1]), int(match[2])
        ok = w % 16 == 0 and h % 16 == 0 and max(w, h) <= 3 * min(w, h) and w * h <= 3840 * 2160
        return None if ok else f"Invalid size '{size}': must be multiples of 16, ratio 1:3 to 3:1."
    allowed = SIZES.get(model, GPT_SIZES)
    if size in allowed:
        return None
    listed = ", ".join(f"'{s}'" for s in allowed[:-1]) + f", and '{allowed[-1]}'"
    return f"Invalid value: '{size}'. Supported values are: {listed}."


def _check(model: str, params: dict[str, Any], edit: bool) -> dict[str, Any] | None:
    """The API's validation: an error body, or None."""
    if not re.match(r"^(gpt-image-|dall-e-[23]$|chatgpt-image-)", model):
        return _no_model(model)
    family = _family(model)
    if edit and model == "dall-e-3":
        message = "Invalid value: 'dall-e-3'. Image edits support 'dall-e-2' and GPT image models."
        return openai_error(message, param="model", code="invalid_value")
    if not isinstance(params.get("prompt"), str) or not params["prompt"]:
        return openai_error(
            "Missing required parameter: 'prompt'.",
            param="prompt",
            code="missing_required_parameter",
        )
    if family == "gpt" and "response_format" in params:
        message = "Unknown parameter: 'response_format'."
        return openai_error(message, param="response_format", code="unknown_parameter")
    if (size := params.get("size")) is not None and (problem := _size_error(model, str(size))):
        return openai_error(problem, param="size", code="invalid_value")
    qualities = QUALITIES[family] + (("xhigh", "max") if model.startswith("gpt-image-2.5-") else ())
    if (quality := params.get("quality")) is not None and quality not in qualities:
        message = f"Invalid value: '{quality}'. Supported values are: {', '.join(qualities)}."
        return openai_error(message, param="quality", code="invalid_value")
    n = int(params.get("n") or 1)
    if not 1 <= n <= (1 if model == "dall-e-3" else 10):
        return openai_error(f"Invalid value for 'n': {n}.", param="n", code="invalid_value")
    return None


def _answer(
    state: OpenAIState, model: str, params: dict[str, Any], size: tuple[int, int]
) -> dict[str, Any]:
    family = _family(model)
    image_format = str(params.get("output_format") or "png") if family == "gpt" else "png"
    data = png(*size, image_format=image_format)
    as_url = family != "gpt" and params.get("response_format", "url") == "url"
    item: dict[str, Any] = (
        {"url": state.store(data)} if as_url else {"b64_json": base64.b64encode(data).decode()}
    )
    if model == "dall-e-3":
        item["revised_prompt"] = f"A detailed, vivid rendering of: {params['prompt']}"
    answer: dict[str, Any] = {
        "created": int(time.time()),
        "data": [item] * int(params.get("n") or 1),
    }
    if family == "gpt":
        tokens = {"input_tokens": 20, "output_tokens": 4160}
        answer |= {
            "background": "opaque",
            "output_format": image_format,
            "quality": params.get("quality")
            if params.get("quality") not in (None, "auto")
            else "medium",
            "size": f"{size[0]}x{size[1]}",
            "usage": {
                **tokens,
                "total_tokens": 4180,
                "input_tokens_details": {"image_tokens": 0, "text_tokens": 20},
                "output_tokens_details": {"image_tokens": 4160, "text_tokens": 0},
            },
        }
    return answer


def _dimensions(size: Any) -> tuple[int, int]:
    match = _FLEXIBLE.match(str(size or ""))
    return (int(match[1]), int(match[2])) if match else (1024, 1024)


def _json(
    status: int, body: bytes | str | dict[str, Any], headers: dict[str, str] | None = None
) -> Response[Any]:
    return Response(body, status_code=status, headers=headers or {}, media_type="application/json")


async def _record(request: Request[Any, Any, Any]) -> Recorded:
    recorded = Recorded(
        method=request.method,
        path=request.url.path,
        headers=dict(request.headers),
        query=dict(request.query_params),
    )
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form()
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                recorded.form[name] = {
                    "filename": value.filename,
                    "content_type": value.content_type,
                    "data": await value.read(),
                }
            else:
                recorded.form[name] = value
    elif request.method == "POST":
        recorded.body = await request.body()
        if content_type.startswith("application/json"):
            recorded.json = await request.json()
    return recorded


def _read_image(part: Any) -> Image.Image | None:
    if not isinstance(part, dict):
        return None
    try:
        with Image.open(io.BytesIO(part["data"])) as image:
            image.load()
            return image
    except (UnidentifiedImageError, OSError):
        return None


def _edit(state: OpenAIState, form: dict[str, Any]) -> Response[Any]:
    model = str(form.get("model") or "dall-e-2")
    params = {k: v for k, v in form.items() if not isinstance(v, dict)}
    if (error := _check(model, params, edit=True)) is not None:
        return _json(400 if error["error"]["code"] != "model_not_found" else 404, error)
    source = _read_image(form.get("image", form.get("image[]")))
    if source is None:
        message = "Invalid image file or mode for image 1, please check your image file."
        return _json(400, openai_error(message, param="image", code="invalid_image_file"))
    if "mask" in form:
        mask = _read_image(form["mask"])
        if mask is None or mask.format != "PNG" or mask.size != source.size:
            message = "Invalid mask image: it must be a PNG with the same dimensions as the image."
            return _json(400, openai_error(message, param="mask", code="invalid_image"))
    return _json(200, _answer(state, model, params, source.size))


def build_openai_emulator(state: OpenAIState) -> Litestar:
    @route("/{rest:path}", http_method=["GET", "POST"])
    async def dispatch(request: Request[Any, Any, Any], rest: FromPath[str]) -> Response[Any]:
        path = rest.strip("/")
        recorded = await _record(request)
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
            return _edit(state, recorded.form)
        body = recorded.json if isinstance(recorded.json, dict) else {}
        model = str(body.get("model") or "dall-e-2")
        if (error := _check(model, body, edit=False)) is not None:
            return _json(400 if error["error"]["code"] != "model_not_found" else 404, error)
        size = body.get("size") or "1024x1024"
        return _json(
            200, _answer(state, model, body, _dimensions("1024x1024" if size == "auto" else size))
        )

    return Litestar(route_handlers=[dispatch], openapi_config=None)
