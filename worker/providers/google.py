"""Google's Gemini image models through the official `google-genai` SDK.

`generateContent` with `responseModalities: ["IMAGE"]` and `imageConfig` (`aspectRatio`,
`imageSize` 1K/2K/4K) answers with inline image parts; image-to-image and edits send the source
(and the mask) as extra inline parts. The model always comes in `ImageRequest.model` (the
catalogue fills the default); nothing here names a model. Imagen is not offered: every Imagen
model was shut down on 2026-08-17 (docs/providers.md, read 2026-12-02).

Refusals arrive as HTTP 200 without an image: `promptFeedback.blockReason`, or a candidate's
`finishReason`. HTTP errors follow `common.status_error` after Google's own readings (an
`API_KEY_INVALID` 400 is an auth failure; a 429's `RetryInfo.retryDelay`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Mapping
from contextlib import suppress
from typing import Any, TypeVar

import httpx
from google import genai
from google.genai import errors, types

from worker.core.errors import ErrorCode, GenerationError
from worker.providers.base import ImageRequest, ImageResult
from worker.providers.common import image_mime, scrub, status_error

# Aspect ratios every current Gemini image model takes: a size is mapped to the nearest.
RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
# Offered by the newest models only: sent when asked for by name (an older model answers 400,
# which is no_result), never chosen for a size.
EXTRA_RATIOS = ("1:4", "4:1", "1:8", "8:1")
# `imageSize` tiers and the pixels each stands for (1K is the API's default).
IMAGE_SIZES = (("1K", 1024 * 1024), ("2K", 2048 * 2048), ("4K", 4096 * 4096))
TIER_SIDES = (1024, 2048, 4096)
# Finish reasons (a candidate without an image) that are Google's filters refusing.
# NO_IMAGE, IMAGE_OTHER, OTHER, STOP and the like are no_result: nothing says a policy refused.
BLOCKED_FINISH = {
    "SAFETY",
    "PROHIBITED_CONTENT",
    "BLOCKLIST",
    "SPII",
    "RECITATION",
    "IMAGE_SAFETY",
    "IMAGE_PROHIBITED_CONTENT",
    "IMAGE_RECITATION",
}
# Prompt-level blocks (`promptFeedback.blockReason`, no candidates). OTHER and
# BLOCKED_REASON_UNSPECIFIED give no reason: no_result. MODEL_ARMOR and JAILBREAK are Vertex's.
BLOCKED_PROMPT = {"SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "IMAGE_SAFETY"}
BLOCKED_PROMPT |= {"MODEL_ARMOR", "JAILBREAK"}
EDIT_INSTRUCTION = (
    "Edit the first image. The second image is a mask of the same size: change only the region "
    "where the mask is transparent and keep every pixel where it is opaque unchanged. Edit: "
)
CREDENTIALS = "GOOGLE_API_KEY or the Vertex AI credentials"
T = TypeVar("T")
# google-genai 3.x sends through httpx2 (a fork with its own exception classes), older through httpx.
_TIMEOUTS: tuple[type[BaseException], ...] = (httpx.TimeoutException, TimeoutError)
_TRANSPORT: tuple[type[BaseException], ...] = (httpx.TransportError, OSError)
with suppress(ImportError):
    import httpx2

    _TIMEOUTS, _TRANSPORT = (
        (*_TIMEOUTS, httpx2.TimeoutException),
        (*_TRANSPORT, httpx2.TransportError),
    )
_DELAY = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def nearest_ratio(width: int, height: int, ratios: tuple[str, ...] = RATIOS) -> str:
    """The supported aspect ratio closest to width:height (compared on a log scale)."""
    target = math.log(width / height)

    def distance(ratio: str) -> float:
        w, h = ratio.split(":")
        return abs(math.log(int(w) / int(h)) - target)

    return min(ratios, key=distance)


def image_size(width: int, height: int) -> str:
    """The smallest `imageSize` tier with at least the requested pixels (else the largest)."""
    for tier, pixels in IMAGE_SIZES:
        if width * height <= pixels:
            return tier
    return IMAGE_SIZES[-1][0]


def _part(data: bytes) -> types.Part:
    """An inline image part, typed by its bytes (the lifecycle hands us PNG, JPEG or WebP)."""
    return types.Part.from_bytes(data=data, mime_type=image_mime(data))


def _enum(value: Any) -> str | None:
    return None if value is None else str(getattr(value, "value", value))


def _details(exc: errors.APIError) -> list[dict[str, Any]]:
    body = exc.details if isinstance(exc.details, dict) else {}
    error = body.get("error", body)
    details = error.get("details") if isinstance(error, dict) else None
    return [d for d in details or [] if isinstance(d, dict)]


def _retry_delay(exc: errors.APIError) -> float | None:
    """Google's `google.rpc.RetryInfo.retryDelay` ("7s"), used when there is no Retry-After."""
    for detail in _details(exc):
        match = _DELAY.match(str(detail.get("retryDelay", "")))
        if str(detail.get("@type", "")).endswith("RetryInfo") and match:
            return float(match[1])
    return None


def map_api_error(exc: errors.APIError, model: str) -> GenerationError:
    """A Google API error as a catalogue error (never with the key or request body in it):
    Google's own readings first, then the shared status policy."""
    code = exc.code
    what = f"Google API {code} {exc.status or ''}".rstrip() + f": {scrub(exc.message)}"
    if any(d.get("reason") == "API_KEY_INVALID" for d in _details(exc)):
        code = 401  # Google says 400 for a wrong key; it is an auth failure all the same
    headers = getattr(exc.response, "headers", None)
    error = status_error(
        code,
        what,
        model=model,
        credentials=CREDENTIALS,
        headers=headers if isinstance(headers, Mapping) else None,
    )
    if error.retryable and error.retry_after is None:
        error.retry_after = _retry_delay(exc)
    return error


class GoogleProvider:
    name = "google"
    default_side = 1024

    def __init__(
        self,
        api_key: str | None,
        base_url: str | None,
        timeout_s: float = 120.0,
        vertex_project: str | None = None,
        vertex_location: str | None = None,
        client: genai.Client | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self.vertex = vertex_project is not None
        if client is None:
            options = types.HttpOptions(
                base_url=base_url,
                timeout=int(timeout_s * 1000),
                # One attempt: the job queue owns retries (and honours Retry-After).
                retry_options=types.HttpRetryOptions(attempts=1),
            )
            if self.vertex:
                client = genai.Client(
                    vertexai=True,
                    project=vertex_project,
                    location=vertex_location or "us-central1",
                    http_options=options,
                )
            else:
                options.api_version = "v1beta"
                client = genai.Client(api_key=api_key, http_options=options)
        self.client = client

    async def generate(self, request: ImageRequest) -> ImageResult:
        contents: list[Any] = [request.prompt]
        if request.source is not None:
            contents.append(_part(request.source))
        return await self._gemini(request, contents)

    async def edit(self, request: ImageRequest) -> ImageResult:
        if request.source is None or request.mask is None:
            raise GenerationError(ErrorCode.MASK_MISSING, "an edit needs a source image and a mask")
        prompt = EDIT_INSTRUCTION + request.prompt
        return await self._gemini(request, [prompt, _part(request.source), _part(request.mask)])

    def _image_config(self, request: ImageRequest) -> tuple[str, str, list[str]]:
        """`aspectRatio`, `imageSize`, and what was asked for but cannot be honoured: an exact
        size (the model picks the pixels of its ratio and tier), a quality level."""
        if request.aspect_ratio in RATIOS or request.aspect_ratio in EXTRA_RATIOS:
            ratio = request.aspect_ratio
        else:
            ratio = nearest_ratio(request.width, request.height)
        tier = image_size(request.width, request.height)
        w, h = (int(x) for x in ratio.split(":"))
        # Exact up to the half pixel a ratio-derived side was rounded by (1024x439 is 21:9).
        exact = abs(request.width * h - request.height * w) <= max(w, h) / 2
        ignored = [] if exact and max(request.width, request.height) in TIER_SIDES else ["size"]
        ignored += ["quality"] if request.quality else []
        return ratio, tier, ignored

    async def _gemini(self, request: ImageRequest, contents: list[Any]) -> ImageResult:
        ratio, tier, ignored = self._image_config(request)
        if request.negative_prompt:  # no native field: ask in words
            contents[0] = f"{contents[0]}\n\nAvoid: {request.negative_prompt}"
        config = types.GenerateContentConfig(
            response_modalities=["IMAGE"],
            image_config=types.ImageConfig(aspect_ratio=ratio, image_size=tier),
            seed=request.seed,
            candidate_count=1,
        )
        response = await self._call(
            request.model,
            self.client.aio.models.generate_content(
                model=request.model, contents=contents, config=config
            ),
        )
        feedback = response.prompt_feedback
        if feedback is not None and feedback.block_reason is not None:
            reason = _enum(feedback.block_reason)
            code = ErrorCode.CONTENT_POLICY if reason in BLOCKED_PROMPT else ErrorCode.NO_RESULT
            message = (
                f": {scrub(feedback.block_reason_message)}" if feedback.block_reason_message else ""
            )
            raise GenerationError(code, f"prompt blocked by Google ({reason}){message}")
        candidate = response.candidates[0] if response.candidates else None
        finish = _enum(candidate.finish_reason) if candidate is not None else None
        parts = (candidate.content.parts if candidate and candidate.content else None) or []
        parts = [p for p in parts if not p.thought]  # thinking models draft images first
        images = [
            (p.inline_data.data, p.inline_data.mime_type or "image/png")
            for p in parts
            if p.inline_data is not None
            and p.inline_data.data
            and (p.inline_data.mime_type or "image/png").startswith("image/")
        ]
        text = " ".join(p.text for p in parts if p.text).strip()
        if not images:
            if finish in BLOCKED_FINISH:
                raise GenerationError(ErrorCode.CONTENT_POLICY, f"image blocked ({finish})")
            said = f": {scrub(text[:200])}" if text else ""
            detail = f"Gemini returned no image (finish reason {finish}){said}"
            raise GenerationError(ErrorCode.NO_RESULT, detail)
        metadata: dict[str, Any] = {
            "model": request.model,
            "aspect_ratio": ratio,
            "image_size": tier,
            "ignored_parameters": ignored,
            "model_version": response.model_version,
            "finish_reason": finish,
        }
        if request.seed is not None:  # sent in generationConfig; the answer carries none
            metadata["seed"] = request.seed
        if request.negative_prompt:
            metadata["negative_prompt_in_prompt"] = True
        if text:
            metadata["model_text"] = text[:500]
        data, content_type = images[-1]
        return ImageResult(data=data, content_type=content_type, metadata=metadata)

    async def _call(self, model: str, call: Awaitable[T]) -> T:
        try:
            return await call
        except errors.APIError as exc:
            raise map_api_error(exc, model) from exc
        except _TIMEOUTS as exc:
            raise GenerationError(
                ErrorCode.PROVIDER_ERROR, f"Google did not answer within {self.timeout_s:g}s"
            ) from exc
        except _TRANSPORT as exc:
            raise GenerationError(
                ErrorCode.PROVIDER_ERROR, f"cannot reach Google: {type(exc).__name__}"
            ) from exc
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            # An answer the SDK could not read (truncated JSON, an HTML page): most likely a
            # proxy or an outage in front of the API, so it is worth another attempt.
            raise GenerationError(
                ErrorCode.PROVIDER_ERROR, f"unreadable answer from Google: {type(exc).__name__}"
            ) from exc
