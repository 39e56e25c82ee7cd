"""A small Server-Sent Events reader over httpx, for tests against a real server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec


class SSEEvent(msgspec.Struct):
    event: str | None
    id: str | None
    data: str
    retry: int | None = None

    def json(self) -> Any:
        return json.loads(self.data)


class SSEComment(msgspec.Struct):
    text: str


async def read_sse(response: httpx.Response) -> AsyncIterator[SSEEvent | SSEComment]:
    event: str | None = None
    event_id: str | None = None
    retry: int | None = None
    data: list[str] = []
    async for line in response.aiter_lines():
        if line == "":
            if data or event is not None or retry is not None:
                yield SSEEvent(event=event, id=event_id, data="\n".join(data), retry=retry)
            event, event_id, retry, data = None, None, None, []
            continue
        if line.startswith(":"):
            yield SSEComment(text=line[1:].strip())
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "id":
            event_id = value
        elif name == "data":
            data.append(value)
        elif name == "retry":
            retry = int(value)
