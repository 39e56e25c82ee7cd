"""The storage protocol: where results go, and the URL they are served at."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol, runtime_checkable
from uuid import UUID

_SAFE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")


@runtime_checkable  # DI (api/deps.py) checks what it hands a route
class Storage(Protocol):
    async def prepare(self) -> None:
        """Once at start-up: make sure the destination exists (directory, bucket)."""
        ...

    async def aclose(self) -> None: ...

    async def put(self, key: str, data: bytes, content_type: str) -> str:
        """Stores `data` under `key` (overwriting: a retried job writes the same key); returns its URL."""
        ...

    async def urls(self, keys: Sequence[str]) -> dict[str, str]:
        """A URL that serves each key now: its public URL, or a freshly signed one for a
        private bucket. Keys that cannot be served are left out."""
        ...

    async def delete(self, keys: Sequence[str]) -> None:
        """Removes the files under `keys`. A key that is already gone is no error, so a delete
        that failed half-way can simply be repeated; a failure raises OSError."""
        ...

    @property
    def signs_urls(self) -> bool:
        """Whether URLs expire (then readers ask `urls` for fresh ones instead of stored URLs)."""
        ...


def result_key(
    workspace_id: UUID, project_id: UUID, generation_id: UUID, extension: str = "png"
) -> str:
    return f"{workspace_id}/{project_id}/{generation_id}.{extension}"


def check_key(key: str) -> str:
    if not _SAFE_KEY.match(key) or ".." in key.split("/"):
        raise ValueError(f"unsafe storage key {key!r}")
    return key
