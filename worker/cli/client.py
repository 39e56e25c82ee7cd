"""A small HTTP client of a running imagejobs API, for the CLI's client commands."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec

from worker.core.config import ClientSettings

DEFAULT_URL = ClientSettings().url


class ClientError(Exception):
    """Something the user can act on, said in one line."""


class GenerationEvent(msgspec.Struct, kw_only=True):
    """The `data:` of a `generation` SSE event (docs/api.md)."""

    id: str
    event_id: int
    kind: str
    status: str
    step: str
    progress: int
    label: str | None = None
    result_image_url: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    error_resolution: str | None = None


TERMINAL = frozenset({"completed", "failed", "cancelled"})
_decode_event = msgspec.json.Decoder(GenerationEvent).decode


def _problem_message(response: httpx.Response) -> str:
    try:
        problem = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    if not isinstance(problem, dict):
        return f"HTTP {response.status_code}"
    detail = str(problem.get("detail") or problem.get("title") or f"HTTP {response.status_code}")
    fields = [
        f"{e.get('field') or e.get('key')}: {e.get('message')}"
        for e in problem.get("errors") or []
        if isinstance(e, dict)
    ]
    return f"{detail} ({'; '.join(fields)})" if fields and fields[0] not in detail else detail


class ApiClient:
    def __init__(self, base_url: str, api_key: str, *, timeout: float = 30.0) -> None:
        if not api_key:
            raise ClientError("no API key: set IMAGEJOBS_API_KEY or pass --api-key")
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=httpx.Timeout(timeout, read=None),
        )

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._http.aclose()

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        try:
            response = await self._http.request(method, path, json=body)
        except httpx.TransportError as exc:
            raise ClientError(
                f"cannot reach the API at {self.base_url} ({type(exc).__name__}): "
                "is it running? (IMAGEJOBS_URL, --url)"
            ) from None
        self._raise_for(response)
        return response.json()

    def _raise_for(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        if response.status_code == 401:
            raise ClientError("the API refused the key (401): check IMAGEJOBS_API_KEY or --api-key")
        raise ClientError(f"{response.status_code}: {_problem_message(response)}")

    async def projects(self) -> list[dict[str, Any]]:
        page = await self.request("GET", "/v1/projects?limit=200")
        return list(page["data"])

    async def default_project(self) -> str:
        """The newest project of the workspace, or a new one named `cli` when there is none."""
        page = await self.request("GET", "/v1/projects?limit=1")
        if page["data"]:
            return str(page["data"][0]["id"])
        created = await self.request("POST", "/v1/projects", {"name": "cli"})
        return str(created["id"])

    async def events(self, generation_id: str) -> AsyncIterator[GenerationEvent]:
        """The generation's SSE stream, from its current state to its terminal event."""
        try:
            async with self._http.stream("GET", f"/v1/generations/{generation_id}/events") as r:
                if r.status_code >= 400:
                    await r.aread()
                    self._raise_for(r)
                data: list[str] = []
                async for line in r.aiter_lines():
                    if line.startswith("data:"):
                        data.append(line[5:].removeprefix(" "))
                    elif line == "" and data:
                        event = _decode_event("\n".join(data))
                        data = []
                        yield event
                        if event.status in TERMINAL:
                            return
        except httpx.TransportError as exc:
            raise ClientError(
                f"the event stream from {self.base_url} broke ({type(exc).__name__})"
            ) from None
