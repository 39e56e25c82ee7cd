"""OpenAI's GPT image models through the official `openai` SDK (`AsyncOpenAI.images`).

Text-to-image uses `images.generate`; image-to-image and inpainting use `images.edit` (with the
mask for inpainting). The model always comes in `ImageRequest.model` (the catalogue fills the
default); nothing here names a model. What is sent is what every GPT image model served today
takes (read 2026-12-02, docs/providers.md): `size` as any WIDTHxHEIGHT with both sides multiples of
16, `quality`, and no `response_format` (they always answer `b64_json`). A `url` answer, which
only an OpenAI-compatible server behind OPENAI_BASE_URL would send, is downloaded. The SDK never
retries: the job queue does, honouring `Retry-After`.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Awaitable
from typing import Any, TypeVar

import openai
from openai import AsyncOpenAI
from openai.types import ImagesResponse

from worker.core.errors import ErrorCode, GenerationError
from worker.core.images import download
from worker.core.netguard import OutboundPolicy
from worker.providers.base import ImageRequest, ImageResult
from worker.providers.common import EXTENSIONS, image_mime, scrub, status_error

# Size limits of the GPT image models: both sides multiples of 16, aspect ratio 1:3 to 3:1, the
# long side at most 3840, at most 3840x2160 pixels. The lower bound (655,360 pixels) is the
# smallest published for any current model; the three standard sizes are all above it.
STEP, MAX_RATIO, MAX_LONG = 16, 3.0, 3840
MIN_PIXELS, MAX_PIXELS = 655_360, 3840 * 2160
# Qualities passed through as asked. `xhigh` and `max` are offered by the newer models only; an
# older one answers 400 invalid_value, which becomes no_result naming the parameter. The DALL·E
# names of old prompt specs are translated.
QUALITIES = {q: q for q in ("low", "medium", "high", "xhigh", "max", "auto")}
QUALITIES |= {"standard": "medium", "hd": "high"}
CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
# Refusals: `moderation_blocked` (type image_generation_user_error) today, the legacy
# `content_policy_violation` before.
SAFETY_CODES = {"content_policy_violation", "moderation_blocked"}
# Errors no retry can fix even though their status (429) says "try later".
ACCOUNT_CODES = {"insufficient_quota", "billing_hard_limit_reached", "billing_not_active"}
CREDENTIALS = "OPENAI_API_KEY and the organization's access"
_RATIO = re.compile(r"^(\d+):(\d+)$")
T = TypeVar("T")


def _half_up(value: float) -> int:
    return math.floor(value + 0.5)


def gpt_size(width: int, height: int) -> str:
    """The closest size a GPT image model accepts: the ratio clamped to 1:3..3:1, scaled into
    the pixel and edge limits, both sides multiples of 16."""
    ratio = min(MAX_RATIO, max(1 / MAX_RATIO, width / height))
    w, h = (width, width / ratio) if width >= height else (height * ratio, height)
    scale = min(1.0, MAX_LONG / max(w, h), math.sqrt(MAX_PIXELS / (w * h)))
    scale = max(scale, math.sqrt(MIN_PIXELS / (w * h)))
    # Round towards the limit being met: up when growing, down when shrinking, else half up
    # (at 6 decimals, so 3839.9999 steps is 3840).
    rounding = math.ceil if scale > 1 else math.floor if scale < 1 else _half_up
    sw, sh = (max(STEP, int(rounding(round(v * scale / STEP, 6))) * STEP) for v in (w, h))
    long, short = max(sw, sh), min(sw, sh)
    while long > MAX_RATIO * short or long > MAX_LONG or long * short > MAX_PIXELS:
        long -= STEP
    while long * short < MIN_PIXELS:
        short += STEP
    return f"{long}x{short}" if sw >= sh else f"{short}x{long}"


def _message(exc: openai.APIStatusError) -> str:
    """The error's own message (the SDK's `str(exc)` embeds the whole body), redacted."""
    message = exc.body.get("message") if isinstance(exc.body, dict) else None
    return scrub(message if isinstance(message, str) else "")


def map_status_error(exc: openai.APIStatusError, model: str) -> GenerationError:
    """An HTTP error from OpenAI as a catalogue error (never with the key or an image in it):
    OpenAI's own codes first (refusals, account problems), then the shared status policy."""
    status, message = exc.status_code, _message(exc)
    code = f" ({exc.code})" if exc.code else ""
    param = f" [{exc.param}]" if isinstance(exc.param, str) and exc.param else ""
    detail = f"OpenAI {status}{code}{param}: {message}".rstrip(": ")
    safety = exc.type == "image_generation_user_error" and re.search(
        r"safety|moderation|content polic", message, re.IGNORECASE
    )
    if status == 400 and (exc.code in SAFETY_CODES or safety):
        return GenerationError(ErrorCode.CONTENT_POLICY, detail)
    if exc.code in ACCOUNT_CODES:
        return GenerationError(ErrorCode.PROVIDER_ERROR, f"{detail} (account)", permanent=True)
    return status_error(
        status, detail, model=model, credentials=CREDENTIALS, headers=exc.response.headers
    )


def _file(name: str, data: bytes) -> tuple[str, bytes, str]:
    """A multipart file, typed by its bytes (sources may be PNG, JPEG or WebP)."""
    mime = image_mime(data)
    return (f"{name}.{EXTENSIONS[mime]}", data, mime)


class OpenAIProvider:
    name = "openai"
    default_side = 1024

    def __init__(
        self,
        api_key: str | None,
        base_url: str | None,
        timeout_s: float = 120.0,
        client: AsyncOpenAI | None = None,
        outbound: OutboundPolicy | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        # `url` answers are fetched through the SSRF guard like any other result URL.
        self.outbound = outbound
        if client is None:
            # A keyless OpenAI-compatible server (OPENAI_BASE_URL alone) still gets a client; the
            # real API then answers 401, which becomes a permanent provider_error.
            key = api_key or "unset"
            client = AsyncOpenAI(api_key=key, base_url=base_url, timeout=timeout_s, max_retries=0)
        self.client = client

    async def aclose(self) -> None:
        """Closes the SDK's connection pool."""
        await self.client.close()

    async def generate(self, request: ImageRequest) -> ImageResult:
        if request.source is not None:
            return await self._edit(request, mask=None)
        model, args, metadata = self._arguments(request)
        response = await self._call(model, self.client.images.generate(model=model, **args))
        return await self._result(response, metadata)

    async def edit(self, request: ImageRequest) -> ImageResult:
        if request.source is None or request.mask is None:
            raise GenerationError(ErrorCode.MASK_MISSING, "an edit needs a source image and a mask")
        return await self._edit(request, mask=request.mask)

    async def _edit(self, request: ImageRequest, mask: bytes | None) -> ImageResult:
        assert request.source is not None
        model, args, metadata = self._arguments(request)
        if mask is not None:
            args["mask"] = ("mask.png", mask, "image/png")
        call = self.client.images.edit(model=model, image=_file("image", request.source), **args)
        return await self._result(await self._call(model, call), metadata)

    def _arguments(self, request: ImageRequest) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """The SDK arguments, and metadata listing what was ignored or adapted."""
        model, w, h = request.model, request.width, request.height
        size = gpt_size(w, h)
        ignored = ["size"] if size != f"{w}x{h}" else []
        if request.aspect_ratio:
            ratio = _RATIO.match(request.aspect_ratio)
            sw, sh = (int(v) for v in size.split("x"))
            ignored += (
                [] if ratio and sw * int(ratio[2]) == sh * int(ratio[1]) else ["aspect_ratio"]
            )
        args: dict[str, Any] = {"prompt": request.prompt, "size": size, "n": 1}
        metadata: dict[str, Any] = {"size": size}
        if request.quality:
            quality = QUALITIES.get(request.quality.lower())
            if quality is not None:
                args["quality"] = metadata["quality"] = quality
            ignored += [] if quality == request.quality else ["quality"]
        if request.negative_prompt:  # no native field: ask in words
            args["prompt"] = f"{request.prompt}\n\nAvoid: {request.negative_prompt}"
            metadata["negative_prompt_in_prompt"] = True
            ignored.append("negative_prompt")
        if request.seed is not None:  # no seed parameter, and none in the answer
            ignored.append("seed")
        metadata["ignored_parameters"] = ignored
        return model, args, metadata

    async def _result(self, response: ImagesResponse, metadata: dict[str, Any]) -> ImageResult:
        if not isinstance(response, ImagesResponse):
            # The SDK hands back the raw body when it is not JSON (an HTML page from a proxy).
            raise GenerationError(
                ErrorCode.PROVIDER_ERROR, "unexpected answer from OpenAI: not JSON"
            )
        item = response.data[0] if response.data else None
        if item is None or not (item.b64_json or item.url):
            raise GenerationError(ErrorCode.NO_RESULT, "OpenAI returned no image")
        if item.b64_json:
            try:
                data = base64.b64decode(item.b64_json, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise GenerationError(ErrorCode.NO_RESULT, "OpenAI sent invalid base64") from exc
        else:
            assert item.url is not None
            data = await download(
                item.url, error=ErrorCode.RESULT_UNREACHABLE, policy=self.outbound
            )
        if item.revised_prompt:
            metadata["revised_prompt"] = item.revised_prompt
        if response.usage is not None:
            metadata["usage"] = response.usage.model_dump(exclude_none=True)
        content_type = CONTENT_TYPES.get(response.output_format or "png", "image/png")
        return ImageResult(data=data, content_type=content_type, metadata=metadata)

    async def _call(self, model: str, call: Awaitable[T]) -> T:
        try:
            return await call
        except openai.APIStatusError as exc:
            raise map_status_error(exc, model) from exc
        except openai.APITimeoutError as exc:
            raise GenerationError(
                ErrorCode.PROVIDER_ERROR, f"OpenAI did not answer within {self.timeout_s:g}s"
            ) from exc
        except openai.APIConnectionError as exc:
            cause = type(exc.__cause__).__name__ if exc.__cause__ else "connection error"
            raise GenerationError(
                ErrorCode.PROVIDER_ERROR, f"cannot reach OpenAI: {cause}"
            ) from exc
        except (openai.APIError, ValueError) as exc:  # an answer the SDK could not read
            raise GenerationError(
                ErrorCode.PROVIDER_ERROR, f"unexpected answer from OpenAI: {type(exc).__name__}"
            ) from exc
