"""The SSE wire format shared by every stream: how an event is written, and which `Last-Event-ID`
can be one of ours.

Streams carry finished frames (bytes): an event is encoded once, however many subscribers it
goes to, and what one subscriber has queued goes out in one write. JSON never contains a raw
line break, so every payload is one `data:` line."""

from __future__ import annotations

import re
from typing import Any

from worker.core.jsonenc import encode

_EVENT_ID = re.compile(r"[0-9]{1,19}")
_MAX_EVENT_ID = 2**63 - 1  # image_events.id is a bigint


_SEP = b"\r\n"
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def sse_event(event: str, payload: Any, event_id: int | None = None) -> bytes:
    """`event: <event>`, `data:` the payload as JSON, and `id:` when the event has a position a
    client can resume after."""
    head = b"event: " + event.encode() + _SEP
    if event_id is not None:
        head = b"id: " + str(int(event_id)).encode() + _SEP + head
    return head + b"data: " + encode(payload) + _SEP + _SEP


def sse_comment(text: str, retry_ms: int | None = None) -> bytes:
    """A comment (`: text`), which clients ignore: keep-alives and notes; `retry:` when given."""
    lines = b"".join(b": " + line.encode() + _SEP for line in _LINE_BREAK.split(text))
    if retry_ms is not None:
        lines += b"retry: " + str(int(retry_ms)).encode() + _SEP
    return lines + _SEP


def parse_last_event_id(raw: str | None) -> int | None:
    """The id a client resumes after, or None (as if absent) for anything that cannot be one of
    ours: not plain ASCII digits, or past bigint. Every SSE route parses it here."""
    if raw is None:
        return None
    value = raw.strip()
    if _EVENT_ID.fullmatch(value) is None:
        return None
    parsed = int(value)
    return parsed if parsed <= _MAX_EVENT_ID else None
