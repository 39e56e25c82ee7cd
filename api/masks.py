"""Inpainting masks arrive as `data:image/png;base64,...`; they are checked here and uploaded
to storage by the API. The data URL itself is never stored."""

from __future__ import annotations

import base64
import binascii

from api.problems import InvalidField
from worker.core.errors import MESSAGES, ErrorCode, GenerationError
from worker.core.images import probe

PREFIX = "data:image/png;base64,"
MAX_MASK_BYTES = 8 * 1024 * 1024
MAX_SIDE = 4096


def mask_error(code: ErrorCode, detail: str | None = None) -> InvalidField:
    message = MESSAGES[code] + (f": {detail}" if detail else "")
    return InvalidField("mask", message, code=code.value)


def decode_mask(mask: str | None) -> bytes:
    """The PNG bytes of a valid mask; `mask_missing` / `mask_invalid` (422) otherwise."""
    if mask is None or mask.strip() == "":
        raise mask_error(ErrorCode.MASK_MISSING)
    if not mask.startswith(PREFIX):
        raise mask_error(ErrorCode.MASK_INVALID)
    try:
        data = base64.b64decode(mask.removeprefix(PREFIX), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise mask_error(ErrorCode.MASK_INVALID, "not valid base64") from exc
    if len(data) > MAX_MASK_BYTES:
        raise mask_error(ErrorCode.MASK_INVALID, "larger than 8 MiB")
    try:
        info = probe(
            data, error=ErrorCode.MASK_INVALID, max_pixels=MAX_SIDE * MAX_SIDE, formats=("PNG",)
        )
    except GenerationError as exc:
        raise mask_error(ErrorCode.MASK_INVALID, exc.detail) from exc
    if max(info.width, info.height) > MAX_SIDE:
        raise mask_error(ErrorCode.MASK_INVALID, f"larger than {MAX_SIDE} pixels")
    return data
