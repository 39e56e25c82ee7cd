"""Google image models through the official `google-genai` SDK.

Gemini image models (`gemini-2.5-flash-image`, the default) answer `generateContent` with inline
image parts; image-to-image and edits send the source (and the mask) as extra inline parts.
Imagen (`generate_images`) is only reachable on Vertex AI (`GOOGLE_CLOUD_PROJECT`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable
from contextlib import suppress
from email.utils import parsedate_to_datetime
from time import time
from typing import Any, TypeVar

import httpx
from google import genai
from google.genai import errors, types

from worker.errors import ErrorCode, GenerationError
from worker.providers.base import ImageRequest, ImageResult

DEFAULT_MODEL = "gemini-2.5-flash-image"
RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
IMAGEN_RATIOS = ("1:1", "3:4", "4:3", "9:16", "16:9")
# Finish reasons that mean Google's filters refused (anything else without an image: no_result).
BLOCKED = {"SAFETY", "IMAGE_SAFETY", "PROHIBITED_CONTENT", "IMAGE_PROHIBITED_CONTENT", "BLOCKLIST"}
EDIT_INSTRUCTION = (
    "Edit the first image. The second image is a mask of the same size: change only the region "
    "where the mask is transparent and keep every pixel where it is opaque unchanged. Edit: "
)
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
# Long tokens in Google's messages (an echoed base64 field, a key) never reach users or logs.
_SECRETISH = re.compile(r"[A-Za-z0-9+/_=-]{32,}")


def nearest_ratio(width: int, height: int, ratios: tuple[str, ...] = RATIOS) -> str:
    """The supported aspect ratio closest to width:height (compared on a log scale)."""
    target = math.log(width / height)

    def distance(ratio: str) -> float:
        w, h = ratio.split(":")
        return abs(math.log(int(w) / int(h)) - target)

    return min(ratios, key=distance)


def _part(data: bytes) -> types.Part:
    """An inline image part; the type is sniffed (the lifecycle hands us PNG, JPEG or WebP)."""
    mime = "image/jpeg" if data.startswith(b"\xff\xd8\xff") else "image/png"
    mime = "image/webp" if data[:4] == b"RIFF" and data[8:12] == b"WEBP" else mime
    return types.Part.from_bytes(data=data, mime_type=mime)


def _enum(value: Any) -> str | None:
    return None if value is None else str(getattr(value, "value", value))


def _details(exc: errors.APIError) -> list[dict[str, Any]]:
    body = exc.details if isinstance(exc.details, dict) else {}
    error = body.get("error", body)
    details = error.get("details") if isinstance(error, dict) else None
    return [d for d in details or [] if isinstance(d, dict)]


def _retry_after(exc: errors.APIError) -> float | None:
    """`Retry-After` (seconds or an HTTP date), else `google.rpc.RetryInfo.retryDelay` ("7s")."""
    headers = getattr(exc.response, "headers", None)
    if raw := (headers.get("retry-after") if headers is not None else None):
        try:
            return max(0.0, float(raw))
        except ValueError:
            with suppress(TypeError, ValueError):
                return max(0.0, parsedate_to_datetime(raw).timestamp() - time())
    for detail in _details(exc):
        match = _DELAY.match(str(detail.get("retryDelay", "")))
        if str(detail.get("@type", "")).endswith("RetryInfo") and match:
            return float(match[1])
    return None


def map_api_error(exc: errors.APIError) -> GenerationError:
    """A Google API error as a catalogue error (never with the key or request body in it)."""
    code = exc.code
    message = _SECRETISH.sub("[redacted]", exc.message or "")[:300]
    what = f"Google API {code} {exc.status or ''}".rstrip() + f": {message}"
    if code in (401, 403) or any(d.get("reason") == "API_KEY_INVALID" for d in _details(exc)):
        return GenerationError(
            ErrorCode.PROVIDER_ERROR,
            f"{what} (authentication failed: check GOOGLE_API_KEY or the Vertex AI credentials)",
        )
    if code in (400, 404):
        return GenerationError(ErrorCode.NO_RESULT, what)
    return GenerationError(ErrorCode.PROVIDER_ERROR, what, retry_after=_retry_after(exc))


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
        if request.model.startswith("imagen-"):
            return await self._imagen(request)
        contents: list[Any] = [request.prompt]
        if request.source is not None:
            contents.append(_part(request.source))
        return await self._gemini(request, contents)

    async def edit(self, request: ImageRequest) -> ImageResult:
        if request.source is None or request.mask is None:
            raise GenerationError(ErrorCode.MASK_MISSING, "an edit needs a source image and a mask")
        if request.model.startswith("imagen-"):
            raise GenerationError(ErrorCode.NO_RESULT, "edits need a Gemini image model")
        prompt = EDIT_INSTRUCTION + request.prompt
        return await self._gemini(request, [prompt, _part(request.source), _part(request.mask)])

    def _metadata(self, request: ImageRequest, ratio: str) -> dict[str, Any]:
        """What was asked for but cannot be honoured: an exact size, a quality level."""
        w, h = (int(x) for x in ratio.split(":"))
        exact = request.width * h == request.height * w
        ignored = (
            [] if exact and max(request.width, request.height) == self.default_side else ["size"]
        )
        ignored += ["quality"] if request.quality else []
        return {"model": request.model, "aspect_ratio": ratio, "ignored_parameters": ignored}

    async def _gemini(self, request: ImageRequest, contents: list[Any]) -> ImageResult:
        ratio = request.aspect_ratio if request.aspect_ratio in RATIOS else None
        ratio = ratio or nearest_ratio(request.width, request.height, RATIOS)
        if request.negative_prompt:  # no native field: ask in words
            contents[0] = f"{contents[0]}\n\nAvoid: {request.negative_prompt}"
        modalities = ["TEXT", "IMAGE"] if request.model.startswith("gemini-2.0") else ["IMAGE"]
        config = types.GenerateContentConfig(
            response_modalities=modalities,
            image_config=types.ImageConfig(aspect_ratio=ratio),
            seed=request.seed,
            candidate_count=1,
        )
        response = await self._call(
            self.client.aio.models.generate_content(
                model=request.model, contents=contents, config=config
            )
        )
        feedback = response.prompt_feedback
        if feedback is not None and feedback.block_reason is not None:
            reason = _enum(feedback.block_reason)
            raise GenerationError(ErrorCode.CONTENT_POLICY, f"prompt blocked by Google ({reason})")
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
            if finish in BLOCKED:
                raise GenerationError(ErrorCode.CONTENT_POLICY, f"image blocked ({finish})")
            said = f": {text[:200]}" if text else ""
            detail = f"Gemini returned no image (finish reason {finish}){said}"
            raise GenerationError(ErrorCode.NO_RESULT, detail)
        metadata = self._metadata(request, ratio)
        metadata.update(model_version=response.model_version, finish_reason=finish)
        if request.seed is not None:
            metadata["seed"] = request.seed
        if request.negative_prompt:
            metadata["negative_prompt_in_prompt"] = True
        if text:
            metadata["model_text"] = text[:500]
        data, content_type = images[-1]
        return ImageResult(data=data, content_type=content_type, metadata=metadata)

    async def _imagen(self, request: ImageRequest) -> ImageResult:
        if not self.vertex:
            raise GenerationError(
                ErrorCode.NO_RESULT,
                f"Imagen models need Vertex AI (set GOOGLE_CLOUD_PROJECT); use {DEFAULT_MODEL}",
            )
        if request.source is not None:
            raise GenerationError(ErrorCode.NO_RESULT, "Imagen does not take a source image")
        ratio = request.aspect_ratio if request.aspect_ratio in IMAGEN_RATIOS else None
        ratio = ratio or nearest_ratio(request.width, request.height, IMAGEN_RATIOS)
        config = types.GenerateImagesConfig(
            number_of_images=1,
            aspect_ratio=ratio,
            negative_prompt=request.negative_prompt,
            seed=request.seed,
            # Vertex refuses a seed while the (default) watermark is on.
            add_watermark=False if request.seed is not None else None,
            include_rai_reason=True,
        )
        response = await self._call(
            self.client.aio.models.generate_images(
                model=request.model, prompt=request.prompt, config=config
            )
        )
        generated = response.generated_images[0] if response.generated_images else None
        image = generated.image if generated is not None else None
        if image is None or not image.image_bytes:
            if generated is not None and generated.rai_filtered_reason:
                detail = f"Imagen filtered the image: {generated.rai_filtered_reason}"
                raise GenerationError(ErrorCode.CONTENT_POLICY, detail)
            raise GenerationError(ErrorCode.NO_RESULT, "Imagen returned no image")
        return ImageResult(
            data=image.image_bytes,
            content_type=image.mime_type or "image/png",
            metadata=self._metadata(request, ratio),
        )

    async def _call(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except errors.APIError as exc:
            raise map_api_error(exc) from exc
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
