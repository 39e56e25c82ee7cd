"""Local file storage: files under LOCAL_STORAGE_DIR, served by the API at /files/<key>."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from worker.storage.base import check_key


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


class LocalStorage:
    def __init__(self, root: Path, public_base_url: str) -> None:
        self.root = root.resolve()
        self.public_base_url = public_base_url.rstrip("/")

    def path_for(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"unsafe storage key {key!r}")
        return path

    async def prepare(self) -> None:
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)

    async def aclose(self) -> None:
        return None

    @property
    def signs_urls(self) -> bool:
        return False

    def url(self, key: str) -> str:
        return f"{self.public_base_url}/files/{check_key(key)}"

    async def put(self, key: str, data: bytes, content_type: str) -> str:
        await asyncio.to_thread(_write_atomically, self.path_for(key), data)
        return self.url(key)

    async def urls(self, keys: Sequence[str]) -> dict[str, str]:
        return {key: self.url(key) for key in keys}

    async def delete(self, keys: Sequence[str]) -> None:
        paths = [self.path_for(key) for key in keys]

        def unlink_all() -> None:
            for path in paths:
                path.unlink(missing_ok=True)

        await asyncio.to_thread(unlink_all)
