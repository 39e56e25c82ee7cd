"""Fetching and checking images: source downloads with size and time limits, Pillow verification."""

from __future__ import annotations

import asyncio
import io
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple, TypeVar

import httpx
from PIL import Image, ImageChops, UnidentifiedImageError, features

from worker.core.config import Settings
from worker.core.errors import ErrorCode, GenerationError
from worker.core.netguard import OutboundPolicy, OutboundRefused, read_capped, stream_get

MAX_SOURCE_BYTES = 25 * 1024 * 1024
SOURCE_TIMEOUT = httpx.Timeout(20.0, connect=5.0)
# The whole download, redirects included: a server dripping bytes cannot hold a job forever.
SOURCE_DEADLINE_S = 60.0
T = TypeVar("T")


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
            return await read_capped(response, max_bytes, too_large)
    except OutboundRefused as exc:
        raise GenerationError(refused or error, str(exc), permanent=True) from exc
    except TimeoutError as exc:
        raise GenerationError(error, f"took longer than {deadline_s:g} s") from exc
    except httpx.HTTPError as exc:
        raise GenerationError(error, type(exc).__name__) from exc


# The image gate: every image we decode (sources, masks, provider results) is opened here, its
# dimensions read from the header and checked before a single pixel is decoded. Pillow's own
# bomb limit (89 MP warns, 179 MP fails) is far above what a worker can afford several times over.
DEFAULT_MAX_PIXELS = Settings().image_max_pixels
# Formats a source or a mask may be in; providers' results may be anything Pillow reads.
INPUT_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP")
# Decodes of admitted images run off the event loop, this many at a time per process, so memory
# stays bounded however many jobs hold an image at once (one 40 MP RGBA frame is 160 MB). A pool
# of that many threads, not a semaphore in front of asyncio.to_thread: its queue costs O(1) per
# waiting decode, where asyncio.Semaphore scans its waiters on every acquire (Python 3.11), which
# was quadratic with thousands of results waiting for their thumbnails.
DECODE_SLOTS = 2
_decoder = ThreadPoolExecutor(max_workers=DECODE_SLOTS, thread_name_prefix="imagejobs-decode")


class ImageInfo(NamedTuple):
    width: int
    height: int
    format: str


def probe(
    data: bytes,
    *,
    error: ErrorCode,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    formats: tuple[str, ...] | None = INPUT_FORMATS,
) -> ImageInfo:
    """Reads an image's header and verifies its structure without decoding it. Unreadable data,
    another format, or more than `max_pixels` raise `error`, as a permanent failure."""
    try:
        # Pillow's bomb warning is ours to decide on (the limit below), not a line in the log.
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=formats) as image:
                width, height = image.size
                image_format = image.format or ""
                if width * height > max_pixels:
                    raise GenerationError(
                        error,
                        f"{width}x{height} is over the limit of {max_pixels:,} pixels",
                        permanent=True,
                    )
                image.verify()
    except Image.DecompressionBombError as exc:
        raise GenerationError(
            error, f"over the limit of {max_pixels:,} pixels", permanent=True
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise GenerationError(error, "not a readable image", permanent=True) from exc
    if width < 1 or height < 1:
        raise GenerationError(error, "the image has no pixels", permanent=True)
    return ImageInfo(width, height, image_format)


async def decode_off_loop(function: Callable[[], T], *, error: ErrorCode, detail: str) -> T:
    """Runs a decode of an image `probe` admitted in a thread, within the process's decode slots;
    a decoder's failure is `error` with `detail`, permanently."""
    try:
        return await asyncio.get_running_loop().run_in_executor(_decoder, function)
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise GenerationError(error, detail, permanent=True) from exc


def image_size(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """The dimensions of a source image; `source_unreadable` when it cannot or may not be read."""
    info = probe(data, error=ErrorCode.SOURCE_UNREADABLE, max_pixels=max_pixels)
    return info.width, info.height


KEPT_FORMATS: dict[str, str] = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


class CheckedImage(NamedTuple):
    data: bytes
    content_type: str
    width: int
    height: int


async def check_result(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> CheckedImage:
    """Verifies a provider's result behind the gate. PNG, JPEG and WebP are kept as they are,
    with the right content type; anything else readable is re-encoded as PNG; unreadable or
    too large is no_result."""
    info = probe(data, error=ErrorCode.NO_RESULT, max_pixels=max_pixels, formats=None)
    if info.format in KEPT_FORMATS:
        return CheckedImage(data, KEPT_FORMATS[info.format], info.width, info.height)
    png = await decode_off_loop(
        lambda: _to_png(data),
        error=ErrorCode.NO_RESULT,
        detail="the provider's result is not a readable image",
    )
    return CheckedImage(png, "image/png", info.width, info.height)


def _to_png(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        out = io.BytesIO()
        image.convert("RGBA").save(out, format="PNG")
        return out.getvalue()


EXTENSIONS: dict[str, str] = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}

# Thumbnails: the longest side, never upscaled; WebP, or PNG where this Pillow has no WebP encoder.
THUMBNAIL_SIDE = 256
THUMBNAIL_WEBP_QUALITY = 80


def thumbnail(data: bytes, longest: int = THUMBNAIL_SIDE) -> tuple[bytes, str]:
    """A preview of an image `check_result` admitted (so PNG, JPEG or WebP within the pixel
    limit): at most `longest` px on its longest side, aspect kept, never enlarged; returns
    (bytes, content type). It decodes: call it through `result_thumbnail`, off the event loop."""
    with Image.open(io.BytesIO(data), formats=tuple(KEPT_FORMATS)) as image:
        # `thumbnail` lets JPEG decode at a reduced scale (draft) instead of at full size.
        image.thumbnail((longest, longest), Image.Resampling.LANCZOS)
        has_alpha = "A" in image.getbands() or "transparency" in image.info
        small = image.convert("RGBA" if has_alpha else "RGB")
    out = io.BytesIO()
    if features.check("webp"):
        small.save(out, format="WEBP", quality=THUMBNAIL_WEBP_QUALITY, method=4)
        return out.getvalue(), "image/webp"
    small.save(out, format="PNG", optimize=True)
    return out.getvalue(), "image/png"


async def result_thumbnail(
    checked: CheckedImage, longest: int = THUMBNAIL_SIDE
) -> tuple[bytes, str]:
    """`thumbnail` of a checked result, in the process's decode slots; a decoder's failure is a
    permanent no_result (the caller decides whether a missing preview matters)."""
    return await decode_off_loop(
        lambda: thumbnail(checked.data, longest),
        error=ErrorCode.NO_RESULT,
        detail="the result cannot be made into a thumbnail",
    )


async def prepare_mask(
    mask: bytes, size: tuple[int, int], max_pixels: int = DEFAULT_MAX_PIXELS
) -> bytes:
    """The user's mask (painted = change here), behind the gate, resized to the source and turned
    into the providers' convention: a PNG whose transparent pixels are the area to repaint."""
    probe(mask, error=ErrorCode.MASK_INVALID, max_pixels=max_pixels, formats=("PNG",))
    return await decode_off_loop(
        lambda: _mask_to_alpha(mask, size),
        error=ErrorCode.MASK_INVALID,
        detail="the mask cannot be read",
    )


def _mask_to_alpha(mask: bytes, size: tuple[int, int]) -> bytes:
    with Image.open(io.BytesIO(mask)) as image:
        rgba = image.convert("RGBA")
    # Painted: visible (alpha) and not black, thresholded at the mask's own size (one byte a
    # pixel) before it is scaled to the source's.
    painted = ImageChops.multiply(rgba.convert("L"), rgba.getchannel("A"))
    del rgba
    painted = painted.point(lambda v: 255 if v > 16 else 0).resize(size, Image.Resampling.NEAREST)
    keep = ImageChops.invert(painted)
    del painted
    black = Image.new("L", size, 0)
    out_image = Image.merge("RGBA", (black, black, black, keep))
    out = io.BytesIO()
    out_image.save(out, format="PNG")
    return out.getvalue()
