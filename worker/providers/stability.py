"""Stability AI through its REST API (v2beta stable-image), over httpx.

- Text-to-image: `POST /v2beta/stable-image/generate/{ultra,core,sd3}`, multipart form. The
  model id picks the endpoint: `ultra` and `core` are endpoints of their own; any other id is an
  SD 3.5-family model, sent to the SD3 endpoint as its `model` field. Model ids are catalogue
  data: none is named here.
- Image-to-image: the same endpoints with `image` and `strength` (SD3 also `mode`); `core` takes
  no source image.
- Inpainting: `POST /v2beta/stable-image/edit/inpaint` with `image` and `mask`; Stability's mask
  is white where the image changes, so ours (transparent = repaint) is converted.

Answers are image bytes with `finish-reason` and `seed` headers (`Accept: image/*`, what we ask
for) or JSON `{"image", "finish_reason", "seed"}`; both are read. Errors are JSON
`{"id", "name", "errors"}`: `content_moderation` and a `CONTENT_FILTERED` finish reason are
refusals, everything else follows the shared status policy. The client never retries: the job
queue does, honouring `Retry-After`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
from collections.abc import Mapping
from typing import Any

import httpx
import msgspec
from PIL import Image

from worker.core.errors import ErrorCode, GenerationError
from worker.core.images import decode_off_loop
from worker.core.netguard import OutboundPolicy, read_capped
from worker.providers.base import ImageRequest, ImageResult
from worker.providers.common import (
    EXTENSIONS,
    image_mime,
    nearest_ratio,
    scrub,
    status_error,
)

DEFAULT_BASE_URL = "https://api.stability.ai"
CREDENTIALS = "STABILITY_API_KEY"
GENERATE_PATH = "/v2beta/stable-image/generate/"
INPAINT_PATH = "/v2beta/stable-image/edit/inpaint"
# Endpoints chosen by a model of the same name.
NAMED_ENDPOINTS = ("ultra", "core")
# Every model that is not a named endpoint goes to this one, with its id in the `model` field
# (the SD 3.5 family); its last path segment names it in metadata.
MODEL_FIELD_PATH = "/v2beta/stable-image/generate/sd3"
SD3_ENDPOINT = MODEL_FIELD_PATH.removeprefix(GENERATE_PATH)
# Endpoints that take a source image; `core` is text-to-image only.
IMAGE_TO_IMAGE = ("ultra", SD3_ENDPOINT)
RATIOS = ("21:9", "16:9", "3:2", "5:4", "1:1", "4:5", "2:3", "9:16", "9:21")
SEED_MAX = 4_294_967_294
# How far an image-to-image result may move from its source (0 = unchanged, 1 = ignore it).
# `ImageRequest` has no strength of its own; the value sent is recorded in the metadata.
STRENGTH = 0.6
# Lossless, and kept as it is by the result gate.
OUTPUT_FORMAT = "png"
ACCEPT = "image/*"
FILTERED = "CONTENT_FILTERED"
SUCCESS = "SUCCESS"
# An ultra PNG is a few MiB (a third more as base64): anything far beyond is not an image.
MAX_ANSWER_BYTES = 64 * 1024 * 1024


class StabilityError(msgspec.Struct):
    """An error body: `{"id": "...", "name": "content_moderation", "errors": ["..."]}`."""

    id: str | None = None
    name: str | None = None
    errors: list[Any] = []
    message: str | None = None


class StabilityImage(msgspec.Struct):
    """A JSON answer (`Accept: application/json`)."""

    image: str
    finish_reason: str | None = None
    seed: int | None = None


def endpoint(model: str) -> str:
    """The generate endpoint for a model id: `ultra`/`core` by name, the SD3 endpoint else."""
    return model if model in NAMED_ENDPOINTS else SD3_ENDPOINT


def stability_mask(mask: bytes) -> bytes:
    """Our mask (a PNG whose transparent pixels are repainted) in Stability's convention: a
    grayscale PNG, white where the image changes and black where it is kept."""
    with Image.open(io.BytesIO(mask)) as image:
        alpha = image.convert("RGBA").getchannel("A")
    white = alpha.point(lambda v: 255 if v == 0 else 0)
    out = io.BytesIO()
    white.save(out, format="PNG")
    return out.getvalue()


def map_error(
    status: int, body: bytes, headers: Mapping[str, str], *, model: str
) -> GenerationError:
    """An HTTP error from Stability as a catalogue error: moderation is a refusal and running
    out of credits is final; the rest is the shared policy (401/403 permanent, 404 the model is
    not served, 429/5xx transient with Retry-After, other 4xx the request's fault)."""
    try:
        parsed = msgspec.json.decode(body, type=StabilityError)
    except (msgspec.DecodeError, msgspec.ValidationError):
        parsed = StabilityError()
    reasons = "; ".join(str(e) for e in parsed.errors) or parsed.message or ""
    name = f" ({scrub(parsed.name)})" if parsed.name else ""
    detail = f"Stability {status}{name}: {scrub(reasons)}".rstrip(": ")
    if parsed.name == "content_moderation":
        return GenerationError(ErrorCode.CONTENT_POLICY, detail)
    if status == 402:
        return GenerationError(
            ErrorCode.PROVIDER_ERROR, f"{detail} (out of credits)", permanent=True
        )
    return status_error(status, detail, model=model, credentials=CREDENTIALS, headers=headers)


def _seed(raw: str | int | None) -> int | None:
    if isinstance(raw, int):
        return raw
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


class StabilityProvider:
    name = "stability"
    default_side = 1024

    def __init__(
        self,
        api_key: str | None,
        base_url: str | None = None,
        *,
        timeout_s: float = 120.0,
        outbound: OutboundPolicy | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        """`outbound` is taken like every provider's, but Stability answers with the image
        itself, never a URL, so nothing is fetched through it."""
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self.timeout_s = timeout_s
        self.outbound = outbound
        # Without a key the API answers 401, which becomes a permanent provider_error.
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = client or httpx.AsyncClient(headers=headers, timeout=timeout_s)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def generate(self, request: ImageRequest) -> ImageResult:
        if not request.model:
            raise GenerationError(ErrorCode.NO_RESULT, "Stability needs a model id")
        target = endpoint(request.model)
        fields, metadata = self._common(request)
        metadata["endpoint"] = target
        if target == SD3_ENDPOINT:
            fields["model"] = request.model
        files: list[tuple[str, tuple[str, bytes, str]]] = []
        if request.source is not None:
            if target not in IMAGE_TO_IMAGE:
                raise GenerationError(
                    ErrorCode.NO_RESULT, f"Stability {target!r} does not take a source image"
                )
            if target == SD3_ENDPOINT:
                fields["mode"] = "image-to-image"
            fields["strength"] = str(STRENGTH)
            metadata["strength"] = STRENGTH
            mime = image_mime(request.source)
            files.append(("image", (f"image.{EXTENSIONS[mime]}", request.source, mime)))
            # The result takes the source's shape.
            metadata["ignored_parameters"] += ["aspect_ratio"] if request.aspect_ratio else []
        else:
            ratio = self._ratio(request, metadata["ignored_parameters"])
            fields["aspect_ratio"] = metadata["aspect_ratio"] = ratio
        return await self._call(GENERATE_PATH + target, fields, files, metadata, request.model)

    async def edit(self, request: ImageRequest) -> ImageResult:
        if request.source is None or request.mask is None:
            raise GenerationError(ErrorCode.MASK_MISSING, "an edit needs a source image and a mask")
        mask = request.mask
        converted = await decode_off_loop(
            lambda: stability_mask(mask),
            error=ErrorCode.MASK_INVALID,
            detail="the mask cannot be read",
        )
        fields, metadata = self._common(request)
        metadata["endpoint"] = "inpaint"  # one endpoint, whatever the model
        mime = image_mime(request.source)
        files = [
            ("image", (f"image.{EXTENSIONS[mime]}", request.source, mime)),
            ("mask", ("mask.png", converted, "image/png")),
        ]
        return await self._call(INPAINT_PATH, fields, files, metadata, request.model)

    def _common(self, request: ImageRequest) -> tuple[dict[str, str], dict[str, Any]]:
        """The fields every endpoint takes, and metadata listing what was ignored."""
        fields = {"prompt": request.prompt, "output_format": OUTPUT_FORMAT}
        ignored: list[str] = []
        if request.negative_prompt:
            fields["negative_prompt"] = request.negative_prompt
        if request.seed is not None:
            if 0 <= request.seed <= SEED_MAX:
                fields["seed"] = str(request.seed)
            else:
                ignored.append("seed")
        if request.quality:
            ignored.append("quality")
        return fields, {"ignored_parameters": ignored}

    def _ratio(self, request: ImageRequest, ignored: list[str]) -> str:
        """The aspect ratio asked for when Stability offers it, else the one nearest the size.
        Stability picks the resolution itself, so an exact size is honoured only in shape."""
        if request.aspect_ratio is not None and request.aspect_ratio in RATIOS:
            return request.aspect_ratio
        ratio = nearest_ratio(request.width, request.height, RATIOS)
        ignored += ["aspect_ratio"] if request.aspect_ratio else []
        w, h = (int(v) for v in ratio.split(":"))
        ignored += [] if request.width * h == request.height * w else ["size"]
        return ratio

    async def _call(
        self,
        path: str,
        fields: dict[str, str],
        files: list[tuple[str, tuple[str, bytes, str]]],
        metadata: dict[str, Any],
        model: str,
    ) -> ImageResult:
        # Text fields as file-less parts: the body is multipart even with no file in it.
        parts: list[tuple[str, Any]] = [
            (name, (None, value.encode())) for name, value in fields.items()
        ]
        status, headers, body = await self._post(path, [*parts, *files])
        if status >= 400:
            raise map_error(status, body, headers, model=model)
        return self._result(headers, body, metadata)

    async def _post(
        self, path: str, parts: list[tuple[str, Any]]
    ) -> tuple[int, httpx.Headers, bytes]:
        """POSTs the form; the answer's status, headers and body (capped at MAX_ANSWER_BYTES).
        `timeout_s` bounds the whole call, not each read."""
        too_large = GenerationError(
            ErrorCode.NO_RESULT, f"Stability's answer is over {MAX_ANSWER_BYTES} bytes"
        )
        try:
            async with (
                asyncio.timeout(self.timeout_s),
                self.client.stream(
                    "POST", self.base_url + path, files=parts, headers={"accept": ACCEPT}
                ) as response,
            ):
                body = await read_capped(response, MAX_ANSWER_BYTES, too_large)
                return response.status_code, response.headers, body
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise GenerationError(
                ErrorCode.PROVIDER_ERROR, f"Stability did not answer within {self.timeout_s:g}s"
            ) from exc
        except httpx.HTTPError as exc:
            raise GenerationError(
                ErrorCode.PROVIDER_ERROR, f"cannot reach Stability: {type(exc).__name__}"
            ) from exc

    def _result(self, headers: httpx.Headers, body: bytes, metadata: dict[str, Any]) -> ImageResult:
        """A 2xx answer, as image bytes with headers or as JSON, into the image and its seed."""
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "application/json":
            try:
                answer = msgspec.json.decode(body, type=StabilityImage)
            except msgspec.ValidationError as exc:
                raise GenerationError(ErrorCode.NO_RESULT, "Stability returned no image") from exc
            except msgspec.DecodeError as exc:  # cut off on the way, or not JSON after all
                raise GenerationError(
                    ErrorCode.PROVIDER_ERROR, "unexpected answer from Stability: invalid JSON"
                ) from exc
            finish, seed = answer.finish_reason, answer.seed
            try:
                data = base64.b64decode(answer.image, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise GenerationError(ErrorCode.NO_RESULT, "Stability sent invalid base64") from exc
        elif content_type.startswith("image/"):
            finish, seed = headers.get("finish-reason"), _seed(headers.get("seed"))
            data = body
        else:
            kind = scrub(content_type) or "no content type"
            raise GenerationError(
                ErrorCode.PROVIDER_ERROR, f"unexpected answer from Stability: {kind}"
            )
        if finish is not None:
            metadata["finish_reason"] = finish
        if seed is not None:
            metadata["seed"] = seed
        if finish == FILTERED:
            raise GenerationError(ErrorCode.CONTENT_POLICY, "Stability filtered the result")
        if finish not in (None, SUCCESS):
            raise GenerationError(ErrorCode.NO_RESULT, f"Stability finished with {scrub(finish)}")
        if not data:
            raise GenerationError(ErrorCode.NO_RESULT, "Stability returned no image")
        return ImageResult(data=data, content_type=image_mime(data), metadata=metadata)
