"""An emulator of Stability AI's REST API (v2beta stable-image), as its docs describe it.

- `POST /v2beta/stable-image/generate/{ultra,core,sd3}` and `POST /v2beta/stable-image/edit/inpaint`,
  multipart/form-data only, behind `Authorization: Bearer <key>`;
- `Accept: image/*` answers the image's bytes with `finish-reason` and `seed` headers;
  `Accept: application/json` answers `{"image": base64, "finish_reason", "seed"}` (so does every
  answer while `state.always_json` is set, as a gateway that ignores Accept would);
- errors are `{"id", "name", "errors": [...]}` with the real status; the form is validated as the
  API does (required fields, enums, seed range, SD3 model ids, a mask the size of the image).

Every request is recorded with its form fields and files (`{"filename", "content_type", "data"}`).
Tests script the next answers with `state.recorder.script(content_moderation(), ...)`.
The names of the 404, 429 and 500 errors are not documented; the emulator's are plausible only.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import random
import uuid
from dataclasses import dataclass, field
from typing import Any

from litestar import Litestar, Request, Response, route
from litestar.params import FromPath
from PIL import Image, ImageFilter

from tests.emulators.recorder import Recorded, Recorder, Scripted, read_image, record

GENERATE = "v2beta/stable-image/generate/"
INPAINT = "v2beta/stable-image/edit/inpaint"
ENDPOINTS = ("ultra", "core", "sd3")
RATIOS = ("21:9", "16:9", "3:2", "5:4", "1:1", "4:5", "2:3", "9:16", "9:21")
FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
SD3_MODELS = (
    "sd3.5-large",
    "sd3.5-large-turbo",
    "sd3.5-medium",
    "sd3.5-flash",
    "sd3-large",
    "sd3-large-turbo",
    "sd3-medium",
)
SEED_MAX = 4_294_967_294
MODERATION_MESSAGE = (
    "Your request was flagged by our content moderation system, as a result your request was "
    "denied and you were not charged."
)


@dataclass
class StabilityState:
    key: str = "sk-stability-emulator-0123456789abcdefghijkl"
    recorder: Recorder = field(default_factory=Recorder)
    base_url: str = ""  # http://127.0.0.1:PORT
    delay_s: float = 0.0  # how long each answer takes (timeouts)
    always_json: bool = False  # answer JSON whatever the request's Accept says
    last_seed: int | None = None  # the seed of the last image served

    def calls(self) -> list[Recorded]:
        return [r for r in self.recorder.requests if r.path.startswith("/v2beta/")]


def image(
    width: int, height: int, image_format: str = "png", colour: tuple[int, int, int] = (90, 60, 200)
) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, format=FORMATS[image_format])
    return out.getvalue()


def stability_error(status: int, name: str, *errors: str) -> Scripted:
    body = {"id": uuid.uuid4().hex, "name": name, "errors": list(errors)}
    return Scripted(status, body)


def content_moderation() -> Scripted:
    return stability_error(403, "content_moderation", MODERATION_MESSAGE)


def rate_limited(retry_after: str | None = "10") -> Scripted:
    answer = stability_error(
        429,
        "rate_limit_exceeded",
        "You have exceeded the rate limit of 150 requests within a 10 second period.",
    )
    answer.headers |= {"retry-after": retry_after} if retry_after is not None else {}
    return answer


def not_found() -> Scripted:
    return stability_error(404, "not_found", "The requested model is not available.")


def payment_required() -> Scripted:
    return stability_error(402, "payment_required", "You lack sufficient credits.")


def server_error() -> Scripted:
    return stability_error(500, "internal_error", "An unexpected server error has occurred.")


def content_filtered(*, as_json: bool = False, seed: int = 1234) -> Scripted:
    """A generation whose output the filter caught: a blurred image, `CONTENT_FILTERED`."""
    with Image.open(io.BytesIO(image(64, 64))) as picture:
        out = io.BytesIO()
        picture.filter(ImageFilter.GaussianBlur(8)).save(out, format="PNG")
    return _image_answer(out.getvalue(), "png", "CONTENT_FILTERED", seed, as_json=as_json)


def _image_answer(
    data: bytes, image_format: str, finish_reason: str, seed: int, *, as_json: bool
) -> Scripted:
    mime = f"image/{image_format}"
    if as_json:
        body: dict[str, Any] = {
            "image": base64.b64encode(data).decode(),
            "finish_reason": finish_reason,
            "seed": seed,
        }
        return Scripted(200, json.dumps(body), content_type=f"application/json; type={mime}")
    headers = {"finish-reason": finish_reason, "seed": str(seed), "x-request-id": uuid.uuid4().hex}
    return Scripted(200, data, headers=headers, content_type=mime)


def _size(ratio: str) -> tuple[int, int]:
    """About a megapixel in `ratio`, sides multiples of 64 (as the API renders)."""
    w, h = (int(v) for v in ratio.split(":"))
    scale = (1024 * 1024 / (w * h)) ** 0.5
    return max(64, round(w * scale / 64) * 64), max(64, round(h * scale / 64) * 64)


def _validate(target: str, form: dict[str, Any]) -> str | None:
    """Why the API would refuse this form (its `errors` entry), or None."""
    prompt = form.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return "prompt: is required"
    if len(prompt) > 10000:
        return "prompt: must be at most 10000 characters"
    if (ratio := form.get("aspect_ratio")) is not None and ratio not in RATIOS:
        return f"aspect_ratio: must be one of {', '.join(RATIOS)}"
    if form.get("output_format", "png") not in FORMATS:
        return "output_format: must be one of png, jpeg, webp"
    if (seed := form.get("seed")) is not None and (not str(seed).isdigit() or int(seed) > SEED_MAX):
        return f"seed: must be an integer between 0 and {SEED_MAX}"
    if target == "sd3" and form.get("model", "sd3.5-large") not in SD3_MODELS:
        return f"model: must be one of {', '.join(SD3_MODELS)}"
    if target == "core" and "image" in form:
        return "image: is not accepted by this endpoint"
    mode = form.get("mode", "text-to-image")
    if target == "sd3" and mode not in ("text-to-image", "image-to-image"):
        return "mode: must be text-to-image or image-to-image"
    wants_image = target == "inpaint" or (target == "sd3" and mode == "image-to-image")
    if wants_image and "image" not in form:
        return "image: is required"
    if target == "sd3" and mode == "text-to-image" and "image" in form:
        return "image: is only accepted in image-to-image mode"
    if "image" in form and target != "inpaint":
        try:
            strength = float(form["strength"])
        except (KeyError, ValueError):
            return "strength: is required when an image is given"
        if not 0 <= strength <= 1:
            return "strength: must be between 0 and 1"
        if "aspect_ratio" in form:
            return "aspect_ratio: is not accepted with an image"
    return None


def _error(status: int, name: str, *errors: str) -> Response[Any]:
    body = {"id": uuid.uuid4().hex, "name": name, "errors": list(errors)}
    return Response(body, status_code=status, media_type="application/json")


def _answer(state: StabilityState, target: str, form: dict[str, Any], as_json: bool) -> Scripted:
    if target == "inpaint" or "image" in form:
        source = read_image(form.get("image"))
        if source is None:
            raise _Refusal(400, "bad_request", "image: cannot be decoded")
        size = source.size
        if target == "inpaint" and "mask" in form:
            mask = read_image(form["mask"])
            if mask is None or mask.size != source.size:
                raise _Refusal(400, "bad_request", "mask: must be an image the size of image")
    else:
        size = _size(str(form.get("aspect_ratio", "1:1")))
    seed = int(form.get("seed") or 0) or random.randint(1, SEED_MAX)
    state.last_seed = seed
    image_format = str(form.get("output_format", "png"))
    return _image_answer(image(*size, image_format), image_format, "SUCCESS", seed, as_json=as_json)


def build_stability_emulator(state: StabilityState) -> Litestar:
    @route("/{rest:path}", http_method=["GET", "POST"])
    async def dispatch(request: Request[Any, Any, Any], rest: FromPath[str]) -> Response[Any]:
        path = rest.strip("/")
        recorded = await record(request)
        state.recorder.requests.append(recorded)
        if path.startswith(GENERATE) and path.removeprefix(GENERATE) in ENDPOINTS:
            target = path.removeprefix(GENERATE)
        elif path == INPAINT:
            target = "inpaint"
        else:
            return _error(404, "not_found", f"{request.method} /{path}: not found")
        if request.method != "POST":
            return _error(405, "method_not_allowed", "use POST")
        authorization = request.headers.get("authorization", "")
        if authorization != f"Bearer {state.key}":
            return _error(401, "unauthorized", "authorization: invalid or missing header value")
        accept = request.headers.get("accept", "")
        if accept not in ("image/*", "application/json"):
            return _error(400, "bad_request", "accept: must be image/* or application/json")
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            return _error(400, "bad_request", "content-type: must be multipart/form-data")
        await asyncio.sleep(state.delay_s)
        answer = state.recorder.next_scripted()
        if answer is None:
            if (problem := _validate(target, recorded.form)) is not None:
                return _error(400, "bad_request", problem)
            try:
                answer = _answer(
                    state, target, recorded.form, state.always_json or accept == "application/json"
                )
            except _Refusal as refusal:
                return _error(refusal.status, refusal.name, refusal.detail)
        return Response(
            answer.body,
            status_code=answer.status,
            headers=answer.headers,
            media_type=answer.content_type,
        )

    return Litestar(route_handlers=[dispatch], openapi_config=None)


class _Refusal(Exception):
    def __init__(self, status: int, name: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.name, self.detail = status, name, detail
