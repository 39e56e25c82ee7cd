"""Fetching and checking images: source downloads with size and time limits, Pillow verification."""

from __future__ import annotations

import asyncio
import io
from typing import NamedTuple

import httpx
from PIL import Image, ImageChops, UnidentifiedImageError

from worker.errors import ErrorCode, GenerationError
from worker.netguard import OutboundPolicy, OutboundRefused, stream_get

MAX_SOURCE_BYTES = 25 * 1024 * 1024
SOURCE_TIMEOUT = httpx.Timeout(20.0, connect=5.0)
# The whole download, redirects included: a server dripping bytes cannot hold a job forever.
SOURCE_DEADLINE_S = 60.0


async def download(
    url: str,
    *,
    error: ErrorCode,
    policy: OutboundPolicy | None = None,
    refused: ErrorCode | None = None,
    max_bytes: int = MAX_SOURCE_BYTES,
    timeout: httpx.Timeout = SOURCE_TIMEOUT,
    deadline_s: float = SOURCE_DEADLINE_S,
) -> bytes:
    """GET `url` into memory through the outbound guard, refusing bodies over `max_bytes`;
    failures raise `error`, a URL the policy forbids raises `refused` (default `error`) at once,
    without retries."""
    policy = policy or OutboundPolicy.from_env()
    too_large = GenerationError(error, f"larger than {max_bytes} bytes", permanent=True)
    try:
        async with (
            asyncio.timeout(deadline_s),
            policy.client(timeout) as client,
            stream_get(client, url, policy) as response,
        ):
            if response.status_code != 200:
                raise GenerationError(error, f"HTTP {response.status_code}")
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise too_large
            chunks = bytearray()
            async for chunk in response.aiter_bytes():
                chunks += chunk
                if len(chunks) > max_bytes:
                    raise too_large
            return bytes(chunks)
    except OutboundRefused as exc:
        raise GenerationError(refused or error, str(exc), permanent=True) from exc
    except TimeoutError as exc:
        raise GenerationError(error, f"took longer than {deadline_s:g} s") from exc
    except httpx.HTTPError as exc:
        raise GenerationError(error, type(exc).__name__) from exc


def image_size(data: bytes) -> tuple[int, int]:
    """The dimensions of an image Pillow can read; `source_unreadable` otherwise."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise GenerationError(ErrorCode.SOURCE_UNREADABLE, type(exc).__name__) from exc


KEPT_FORMATS: dict[str, str] = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
MAX_RESULT_PIXELS = 64_000_000


class CheckedImage(NamedTuple):
    data: bytes
    content_type: str
    width: int
    height: int


def check_result(data: bytes) -> CheckedImage:
    """Verifies a provider's result with Pillow. PNG, JPEG and WebP are kept as they are, with
    the right content type; anything else readable is re-encoded as PNG; unreadable is no_result."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > MAX_RESULT_PIXELS:
                raise GenerationError(
                    ErrorCode.NO_RESULT, f"result of {width}x{height} is too large"
                )
            image_format = image.format or ""
            if image_format in KEPT_FORMATS:
                return CheckedImage(data, KEPT_FORMATS[image_format], width, height)
            out = io.BytesIO()
            image.convert("RGBA").save(out, format="PNG")
            return CheckedImage(out.getvalue(), "image/png", width, height)
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
    ) as exc:
        raise GenerationError(
            ErrorCode.NO_RESULT, "the provider's result is not a readable image"
        ) from exc


EXTENSIONS: dict[str, str] = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


def prepare_mask(mask: bytes, size: tuple[int, int]) -> bytes:
    """The user's mask (painted = change here) resized to the source and turned into the
    providers' convention: a PNG whose transparent pixels are the area to repaint."""
    try:
        with Image.open(io.BytesIO(mask)) as image:
            rgba = image.convert("RGBA").resize(size, Image.Resampling.NEAREST)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise GenerationError(ErrorCode.MASK_INVALID, "the mask cannot be read") from exc
    alpha = rgba.getchannel("A")
    light = rgba.convert("L")
    # Painted: visible (alpha) and not black. Those pixels become transparent (edit here).
    painted = ImageChops.multiply(light, alpha).point(lambda v: 255 if v > 16 else 0)
    keep = ImageChops.invert(painted)
    out_image = Image.new("RGBA", size, (0, 0, 0, 255))
    out_image.putalpha(keep)
    out = io.BytesIO()
    out_image.save(out, format="PNG")
    return out.getvalue()
