"""OpenAI image models through the official `openai` SDK (`AsyncOpenAI.images`).

GPT image models answer with base64 (`b64_json`); the legacy DALL·E models are asked for base64
too, but a `url` answer is downloaded. Text-to-image uses `images.generate`; image-to-image and
inpainting use `images.edit` (with the mask for inpainting). The SDK never retries: the job queue
does, honouring `Retry-After`.
"""

from __future__ import annotations

import base64
import binascii
import math
import os
import re
from collections.abc import Awaitable
from contextlib import suppress
from email.utils import parsedate_to_datetime
from time import time
from typing import Any, TypeVar

import openai
from openai import AsyncOpenAI
from openai.types import ImagesResponse

from worker.errors import ErrorCode, GenerationError
from worker.images import download
from worker.netguard import OutboundPolicy
from worker.providers.base import ImageRequest, ImageResult

DEFAULT_MODEL = "gpt-image-1.5"
GPT_SIZES = ("1024x1024", "1536x1024", "1024x1536")
SIZES: dict[str, tuple[str, ...]] = {
    "dall-e-3": ("1024x1024", "1792x1024", "1024x1792"),
    "dall-e-2": ("256x256", "512x512", "1024x1024"),
}
QUALITIES: dict[str, dict[str, str]] = {
    "gpt": {q: q for q in ("low", "medium", "high", "auto")} | {"standard": "medium", "hd": "high"},
    "dall-e-3": {"standard": "standard", "hd": "hd", "low": "standard", "medium": "standard"}
    | {"high": "hd"},
    "dall-e-2": {},  # one quality only: nothing to send
}
CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
SAFETY_CODES = {"content_policy_violation", "moderation_blocked"}
# Errors no retry can fix even though their status says "try later".
ACCOUNT_CODES = {"insufficient_quota", "billing_hard_limit_reached", "billing_not_active"}
# Keys and long tokens (an echoed base64 field) never reach users or logs.
_RATIO = re.compile(r"^(\d+):(\d+)$")
_SECRETISH = re.compile(r"sk-[A-Za-z0-9_*-]{6,}|[A-Za-z0-9+/_=-]{32,}")
T = TypeVar("T")


def family(model: str) -> str:
    return model if model in ("dall-e-2", "dall-e-3") else "gpt"


def flexible(model: str) -> bool:
    """Models that take any WIDTHxHEIGHT (multiples of 16, ratio 1:3 to 3:1, up to 3840x2160)."""
    return model == "gpt-image-2" or model.startswith(("gpt-image-2-", "gpt-image-2.5-"))


def nearest_size(width: int, height: int, allowed: tuple[str, ...]) -> str:
    """The allowed size closest in aspect ratio; among equals, the smallest one covering the
    requested long side (else the largest)."""
    target, side = math.log(width / height), max(width, height)

    def key(size: str) -> tuple[float, int, int]:
        w, h = (int(v) for v in size.split("x"))
        covers = max(w, h) >= side
        return (
            round(abs(math.log(w / h) - target), 6),
            0 if covers else 1,
            w * h * (1 if covers else -1),
        )

    return min(allowed, key=key)


def flexible_size(width: int, height: int) -> str:
    ratio = min(3.0, max(1 / 3, width / height))
    long_max, short_max = 3840, 2160
    w, h = (width, width / ratio) if width >= height else (height * ratio, height)
    scale = min(1.0, long_max / max(w, h), short_max / min(w, h))
    return f"{max(16, round(w * scale / 16) * 16)}x{max(16, round(h * scale / 16) * 16)}"


def _message(exc: openai.APIStatusError) -> str:
    """The error's own message (the SDK's `str(exc)` embeds the whole body), redacted."""
    message = exc.body.get("message") if isinstance(exc.body, dict) else None
    return _SECRETISH.sub("[redacted]", message if isinstance(message, str) else "")[:300]


def retry_after(headers: Any) -> float | None:
    """`retry-after-ms`, else `Retry-After` in seconds or as an HTTP date."""
    if (raw_ms := headers.get("retry-after-ms")) is not None:
        with suppress(ValueError):
            return max(0.0, float(raw_ms) / 1000)
    if (raw := headers.get("retry-after")) is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        with suppress(TypeError, ValueError):
            return max(0.0, parsedate_to_datetime(raw).timestamp() - time())
    return None


def map_status_error(exc: openai.APIStatusError) -> GenerationError:
    """An HTTP error from OpenAI as a catalogue error (never with the key or an image in it)."""
    status, message = exc.status_code, _message(exc)
    code = f" ({exc.code})" if exc.code else ""
    detail = f"OpenAI {status}{code}: {message}".rstrip(": ")
    safety = exc.type == "image_generation_user_error" and re.search(
        r"safety|moderation|content polic", message, re.IGNORECASE
    )
    if status == 400 and (exc.code in SAFETY_CODES or safety):
        return GenerationError(ErrorCode.CONTENT_POLICY, detail)
    if status in (401, 403):
        hint = "authentication failed: check OPENAI_API_KEY and the organization's access"
        return GenerationError(ErrorCode.PROVIDER_ERROR, f"{detail} ({hint})", permanent=True)
    if exc.code in ACCOUNT_CODES:
        return GenerationError(ErrorCode.PROVIDER_ERROR, f"{detail} (account)", permanent=True)
    if status < 500 and status not in (408, 409, 429):
        return GenerationError(ErrorCode.NO_RESULT, detail)
    return GenerationError(
        ErrorCode.PROVIDER_ERROR, detail, retry_after=retry_after(exc.response.headers)
    )


def _file(name: str, data: bytes) -> tuple[str, bytes, str]:
    """A multipart file; the type is sniffed (sources may be PNG, JPEG or WebP)."""
    kind = "jpeg" if data.startswith(b"\xff\xd8\xff") else "png"
    kind = "webp" if data[:4] == b"RIFF" and data[8:12] == b"WEBP" else kind
    return (f"{name}.{'jpg' if kind == 'jpeg' else kind}", data, f"image/{kind}")


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
            key = api_key or os.environ.get("OPENAI_API_KEY") or "unset"
            client = AsyncOpenAI(api_key=key, base_url=base_url, timeout=timeout_s, max_retries=0)
        self.client = client

    async def aclose(self) -> None:
        """Closes the SDK's connection pool."""
        await self.client.close()

    async def generate(self, request: ImageRequest) -> ImageResult:
        if request.source is not None:
            return await self._edit(request, mask=None)
        model, args, metadata = self._arguments(request)
        response = await self._call(self.client.images.generate(model=model, **args))
        return await self._result(response, metadata)

    async def edit(self, request: ImageRequest) -> ImageResult:
        if request.source is None or request.mask is None:
            raise GenerationError(ErrorCode.MASK_MISSING, "an edit needs a source image and a mask")
        return await self._edit(request, mask=request.mask)

    async def _edit(self, request: ImageRequest, mask: bytes | None) -> ImageResult:
        assert request.source is not None
        model, args, metadata = self._arguments(request)
        if model == "dall-e-3":
            raise GenerationError(ErrorCode.NO_RESULT, "dall-e-3 cannot edit images")
        if mask is not None:
            args["mask"] = ("mask.png", mask, "image/png")
        call = self.client.images.edit(model=model, image=_file("image", request.source), **args)
        return await self._result(await self._call(call), metadata)

    def _arguments(self, request: ImageRequest) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """The SDK arguments, and metadata listing what was ignored or adapted."""
        model = request.model or DEFAULT_MODEL
        kind = family(model)
        w, h = request.width, request.height
        if flexible(model):
            size = flexible_size(w, h)
        else:
            size = nearest_size(w, h, SIZES.get(kind, GPT_SIZES))
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
            table = QUALITIES[kind]
            if flexible(model) and model.startswith("gpt-image-2.5-"):
                table = table | {"xhigh": "xhigh", "max": "max"}
            quality = table.get(request.quality) or table.get(request.quality.lower())
            if quality is not None:
                args["quality"] = metadata["quality"] = quality
            ignored += [] if quality == request.quality else ["quality"]
        if request.negative_prompt:  # no native field: ask in words
            args["prompt"] = f"{request.prompt}\n\nAvoid: {request.negative_prompt}"
            metadata["negative_prompt_in_prompt"] = True
            ignored.append("negative_prompt")
        if request.seed is not None:
            ignored.append("seed")
        if kind != "gpt":  # GPT image models refuse response_format (they always send base64)
            args["response_format"] = "b64_json"
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

    async def _call(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except openai.APIStatusError as exc:
            raise map_status_error(exc) from exc
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
