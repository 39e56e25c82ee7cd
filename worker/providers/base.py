"""The provider protocol: what the lifecycle asks of OpenAI, Google, fal and the local renderer."""

from __future__ import annotations

import re
from typing import Any, Protocol

import msgspec

from worker.errors import ErrorCode, GenerationError

_SIZE = re.compile(r"^(\d{2,5})x(\d{2,5})$")
_RATIO = re.compile(r"^(\d{1,3}):(\d{1,3})$")
MIN_SIDE, MAX_SIDE = 64, 4096


class ImageRequest(msgspec.Struct, frozen=True, kw_only=True):
    prompt: str
    model: str
    width: int
    height: int
    seed: int | None = None
    quality: str | None = None
    aspect_ratio: str | None = None
    negative_prompt: str | None = None
    source: bytes | None = None


class ImageResult(msgspec.Struct, frozen=True, kw_only=True):
    data: bytes
    content_type: str
    metadata: dict[str, Any] = {}


class Provider(Protocol):
    name: str

    async def generate(self, request: ImageRequest) -> ImageResult: ...


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
    prompt: str, model: str, spec: dict[str, Any], *, default_side: int, source: bytes | None
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
    )
