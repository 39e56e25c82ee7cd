"""What every provider adapter shares: the error policy for HTTP statuses, Retry-After, the
image type of bytes we send, and scrubbing of provider messages. Written once, here."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from contextlib import suppress
from email.utils import parsedate_to_datetime
from time import time

from worker.core.errors import ErrorCode, GenerationError

# Keys and long tokens (an echoed key, a base64 field) never reach users or logs.
_SECRETISH = re.compile(r"sk-[A-Za-z0-9_*-]{6,}|[A-Za-z0-9+/_=-]{32,}")
MAX_MESSAGE = 300
# Statuses that say "try again later", whoever sends them.
TRANSIENT_STATUSES = frozenset({408, 409, 425, 429})


def scrub(message: str | None) -> str:
    """A provider's message, safe to show: key-like tokens redacted, length capped."""
    return _SECRETISH.sub("[redacted]", message or "")[:MAX_MESSAGE]


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """`retry-after-ms` (OpenAI), else `Retry-After` in seconds or as an HTTP date."""
    if headers is None:
        return None
    if (raw_ms := headers.get("retry-after-ms")) is not None:
        with suppress(ValueError):
            return max(0.0, float(raw_ms) / 1000)
    if (raw := headers.get("retry-after")) is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        with suppress(TypeError, ValueError, IndexError):
            return max(0.0, parsedate_to_datetime(raw).timestamp() - time())
    return None


def image_mime(data: bytes) -> str:
    """The type of an image we hand a provider (the gate admits PNG, JPEG and WebP only)."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "image/png"


EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


def status_error(
    status: int,
    detail: str,
    *,
    model: str,
    credentials: str,
    headers: Mapping[str, str] | None = None,
) -> GenerationError:
    """The policy every provider follows for an HTTP error its adapter has no better reading
    of: 401/403 are permanent (a key does not fix itself); 404 means the model is not served
    (`model_unavailable`, permanent); 408/409/425/429 and 5xx are transient, honouring
    Retry-After; any other 4xx is the request's fault (`no_result`, permanent)."""
    if status in (401, 403):
        return GenerationError(
            ErrorCode.PROVIDER_ERROR,
            f"{detail} (authentication failed: check {credentials})",
            permanent=True,
        )
    if status == 404:
        return GenerationError(ErrorCode.MODEL_UNAVAILABLE, f"{model!r} ({detail})")
    if status in TRANSIENT_STATUSES or status >= 500:
        return GenerationError(ErrorCode.PROVIDER_ERROR, detail, retry_after=retry_after(headers))
    return GenerationError(ErrorCode.NO_RESULT, detail)


def nearest_ratio(width: int, height: int, ratios: tuple[str, ...]) -> str:
    """The ratio ("16:9") among `ratios` closest to width:height, compared on a log scale so
    that 2:1 and 1:2 are equally far from 1:1."""
    target = math.log(width / height)

    def distance(ratio: str) -> float:
        w, h = ratio.split(":")
        return abs(math.log(int(w) / int(h)) - target)

    return min(ratios, key=distance)
