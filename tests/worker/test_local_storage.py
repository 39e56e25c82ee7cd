"""LocalStorage: files under a root, served by the API at /files/<key>, removable by key."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.storage.local import LocalStorage


async def test_put_urls_and_delete_round_trip(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path, "http://files.test/")
    url = await storage.put("ws/p/g.png", b"png", "image/png")
    await storage.put("ws/p/g-thumb.webp", b"webp", "image/webp")

    assert url == "http://files.test/files/ws/p/g.png"
    assert await storage.urls(["ws/p/g.png"]) == {"ws/p/g.png": url}
    assert storage.signs_urls is False

    await storage.delete(["ws/p/g.png", "ws/p/g-thumb.webp"])
    await storage.delete(["ws/p/g.png", "ws/p/never-was.png"])  # gone already: no error

    assert not (tmp_path / "ws/p/g.png").exists()
    assert not (tmp_path / "ws/p/g-thumb.webp").exists()


@pytest.mark.parametrize("key", ["../escape.png", "/abs.png", "a/../../b.png", ".hidden"])
async def test_delete_refuses_keys_outside_the_root(tmp_path: Path, key: str) -> None:
    storage = LocalStorage(tmp_path / "root", "http://files.test")
    (tmp_path / "escape.png").write_bytes(b"x")

    with pytest.raises(ValueError, match="unsafe storage key"):
        await storage.delete([key])

    assert (tmp_path / "escape.png").exists()
