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


class _Parser:
    """Lines in, events and comments out (the SSE grammar, as a browser's EventSource reads it)."""

    def __init__(self) -> None:
        self.event: str | None = None
        self.event_id: str | None = None
        self.retry: int | None = None
        self.data: list[str] = []

    def line(self, line: str) -> SSEEvent | SSEComment | None:
        if line == "":
            found = None
            if self.data or self.event is not None or self.retry is not None:
                found = SSEEvent(
                    event=self.event, id=self.event_id, data="\n".join(self.data), retry=self.retry
                )
            self.event, self.event_id, self.retry, self.data = None, None, None, []
            return found
        if line.startswith(":"):
            return SSEComment(text=line[1:].strip())
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self.event = value
        elif name == "id":
            self.event_id = value
        elif name == "data":
            self.data.append(value)
        elif name == "retry":
            self.retry = int(value)
        return None


async def read_sse(response: httpx.Response) -> AsyncIterator[SSEEvent | SSEComment]:
    parser = _Parser()
    async for line in response.aiter_lines():
        found = parser.line(line)
        if found is not None:
            yield found


def parse_frames(chunk: bytes) -> list[SSEEvent | SSEComment]:
    """What one write of a stream holds (several frames when it was coalesced)."""
    parser = _Parser()
    found = (parser.line(line) for line in chunk.decode().replace("\r\n", "\n").split("\n"))
    return [item for item in found if item is not None]


async def frames(stream: AsyncIterator[bytes]) -> AsyncIterator[SSEEvent | SSEComment]:
    """The events and comments of a stream's writes, one by one."""
    async for chunk in stream:
        for item in parse_frames(chunk):
            yield item
