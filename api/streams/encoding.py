"""The SSE wire format shared by every stream: how an event is written, and which `Last-Event-ID`
can be one of ours."""

from __future__ import annotations

import re
from typing import Any

from litestar.response import ServerSentEventMessage

from worker.core.jsonenc import encode_str

_EVENT_ID = re.compile(r"[0-9]{1,19}")
_MAX_EVENT_ID = 2**63 - 1  # image_events.id is a bigint


def sse_event(event: str, payload: Any, event_id: int | None = None) -> ServerSentEventMessage:
    """`event: <event>`, `data:` the payload as JSON, and `id:` when the event has a position a
    client can resume after."""
    return ServerSentEventMessage(data=encode_str(payload), event=event, id=event_id)


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
