"""A Sentry ingest endpoint: accepts `POST /api/<project>/envelope/` (gzip or plain),
decodes the envelope and keeps its error events for the test to inspect."""

from __future__ import annotations

import gzip
import json
import threading
import time
from typing import Any

from litestar import Litestar, Request, post
from litestar.params import FromPath


def decode_envelope(body: bytes) -> list[tuple[dict[str, Any], bytes]]:
    """[(item header, item payload)]; the first line is the envelope header."""
    _, _, rest = body.partition(b"\n")
    items: list[tuple[dict[str, Any], bytes]] = []
    while rest.strip():
        header_line, _, rest = rest.partition(b"\n")
        header = json.loads(header_line)
        if "length" in header:
            length = int(header["length"])
            payload, rest = rest[:length], rest[length + 1 :]
        else:
            payload, _, rest = rest.partition(b"\n")
        items.append((header, payload))
    return items


def _decompress(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(body)
    return body


class SentryInbox:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.projects: list[str] = []
        self._lock = threading.Lock()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.events) >= count:
                    return list(self.events)
            time.sleep(0.02)
        with self._lock:
            return list(self.events)

    def app(self) -> Litestar:
        @post("/api/{project:str}/envelope/", status_code=200)
        async def envelope(
            project: FromPath[str], request: Request[Any, Any, Any]
        ) -> dict[str, str]:
            body = _decompress(await request.body(), request.headers.get("content-encoding", ""))
            for header, payload in decode_envelope(body):
                if header.get("type") == "event":
                    with self._lock:
                        self.events.append(json.loads(payload))
                        self.projects.append(project)
            return {"id": "0" * 32}

        return Litestar([envelope])
