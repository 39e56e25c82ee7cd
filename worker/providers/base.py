"""The provider protocol: what the lifecycle asks of OpenAI, Google, fal and the local renderer."""

from __future__ import annotations

import re
from typing import Any, Protocol

import msgspec

from worker.core.errors import ErrorCode, GenerationError

_SIZE = re.compile(r"^(\d{2,5})x(\d{2,5})$")
_RATIO = re.compile(r"^(\d{1,3}):(\d{1,3})$")
MIN_SIDE, MAX_SIDE = 64, 4096


class ImageRequest(msgspec.Struct, frozen=True, kw_only=True):
    """What the lifecycle asks for, in provider-neutral terms (from `prompt_spec`)."""

    prompt: str
    model: str
    width: int
    height: int
    seed: int | None = None
    quality: str | None = None
    aspect_ratio: str | None = None
    negative_prompt: str | None = None
    # Image-to-image: the source image's bytes (downloaded and checked by the lifecycle).
    source: bytes | None = None
    # Where the source came from: queue-based providers fetch it themselves.
    source_url: str | None = None
    # Edits (inpainting): a PNG mask the size of `source`; opaque pixels are kept, transparent
    # (alpha 0) pixels are repainted, as OpenAI's edit endpoint defines it.
    mask: bytes | None = None


class ImageResult(msgspec.Struct, frozen=True, kw_only=True):
    data: bytes
    content_type: str
    # Anything worth keeping in generation.metadata (revised prompt, ignored parameters, ...).
    metadata: dict[str, Any] = {}


class Provider(Protocol):
    """A synchronous provider: one call returns the image (OpenAI, Google, local)."""

    name: str
    default_side: int

    async def generate(self, request: ImageRequest) -> ImageResult:
        """Text-to-image, or image-to-image when `request.source` is set."""
        ...

    async def edit(self, request: ImageRequest) -> ImageResult:
        """Inpainting: `request.source` repainted where `request.mask` is transparent."""
        ...


class JobStatus(msgspec.Struct, frozen=True, kw_only=True):
    state: str  # "queued" | "running" | "completed" | "failed"
    queue_position: int | None = None
    logs: list[str] = []
    error: str | None = None


class AsyncProvider(Protocol):
    """A queue-based provider (fal): submit, then a webhook or polling says when it is done."""

    name: str
    default_side: int

    async def submit(self, request: ImageRequest, webhook_url: str | None) -> str:
        """Queues the request; returns the provider's job id."""
        ...

    async def status(self, model: str, job_id: str) -> JobStatus: ...

    async def result_urls(self, model: str, job_id: str) -> list[str]:
        """URLs of the finished job's images (downloaded by the lifecycle)."""
        ...

    async def cancel(self, model: str, job_id: str) -> None: ...


def parse_size(spec: dict[str, Any], default: int) -> tuple[int, int]:
    """`size` ("1024x768") wins; else `aspect_ratio` ("16:9") around `default`; else a square."""
    size = spec.get("size")
    if isinstance(size, str) and (match := _SIZE.match(size)):
        width, height = int(match[1]), int(match[2])
    elif isinstance(ratio := spec.get("aspect_ratio"), str) and (match := _RATIO.match(ratio)):
        w, h = int(match[1]), int(match[2])
        if w == 0 or h == 0:
            raise GenerationError(ErrorCode.NO_RESULT, f"invalid aspect_ratio {ratio!r}")
        scale = default / max(w, h)
        width, height = round(w * scale), round(h * scale)
    else:
        width = height = default
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        raise GenerationError(ErrorCode.NO_RESULT, f"size {width}x{height} is out of range")
    return width, height


def build_request(
    prompt: str,
    model: str,
    spec: dict[str, Any],
    *,
    default_side: int,
    source: bytes | None,
    source_url: str | None = None,
    mask: bytes | None = None,
) -> ImageRequest:
    seed = spec.get("seed")
    width, height = parse_size(spec, default_side)
    return ImageRequest(
        prompt=prompt,
        model=model,
        width=width,
        height=height,
        seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
        quality=spec.get("quality") if isinstance(spec.get("quality"), str) else None,
        aspect_ratio=spec.get("aspect_ratio")
        if isinstance(spec.get("aspect_ratio"), str)
        else None,
        negative_prompt=(
            spec.get("negative_prompt") if isinstance(spec.get("negative_prompt"), str) else None
        ),
        source=source,
        source_url=source_url,
        mask=mask,
    )
