"""The image gate: every image is measured from its header before it is decoded, bombs and
oversized images fail permanently with their catalogue code, and edits run on columns the
client cannot write (issue 12, findings 1-3 and 11)."""

from __future__ import annotations

import asyncio
import io
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from tests.bombs import large_png
from tests.factories import insert_generation
from tests.worker.conftest import generation_row, make_runtime
from worker.core.errors import MAX_ATTEMPTS, ErrorCode, GenerationError
from worker.core.images import DEFAULT_MAX_PIXELS, check_result, image_size, prepare_mask, probe
from worker.providers.base import ImageRequest, ImageResult
from worker.providers.local import LocalProvider
from worker.queue.pipeline import run_edit, run_generation


def png(width: int, height: int, color: tuple[int, int, int, int] = (0, 0, 255, 255)) -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", (width, height), color).save(out, format="PNG")
    return out.getvalue()


def gif(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("P", (width, height)).save(out, format="GIF")
    return out.getvalue()


# 144 MP in 18 kB: over our limit, under Pillow's own bomb error (179 MP), over its warning.
LARGE = large_png(12000, 12000)
# 400 MP: over Pillow's DecompressionBombError limit.
BOMB = large_png(20000, 20000)


class RecordingProvider(LocalProvider):
    """Renders for real and counts the calls that reach it."""

    def __init__(self) -> None:
        super().__init__(delay_ms=0)
        self.calls = 0

    async def generate(self, request: ImageRequest) -> ImageResult:
        self.calls += 1
        return await super().generate(request)

    async def edit(self, request: ImageRequest) -> ImageResult:
        self.calls += 1
        return await super().edit(request)


class ExplodingProvider(LocalProvider):
    """A provider whose client library fails in a way nobody planned for."""

    async def edit(self, request: ImageRequest) -> ImageResult:
        raise KeyError("data")


class Files(BaseHTTPRequestHandler):
    routes: dict[str, bytes] = {}
    requested: list[str] = []

    def do_GET(self) -> None:
        Files.requested.append(self.path)
        body = self.routes.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def files() -> Iterator[str]:
    mask = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    mask.paste((255, 255, 255, 255), (0, 0, 32, 64))
    out = io.BytesIO()
    mask.save(out, format="PNG")
    Files.routes = {
        "/source.png": png(64, 64),
        "/mask.png": out.getvalue(),
        "/large.png": LARGE,
        "/bomb.png": BOMB,
        "/anim.gif": gif(64, 64),
    }
    server = ThreadingHTTPServer(("127.0.0.1", 0), Files)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


# --- the gate itself ---------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "claimed"), [(LARGE, "12000x12000"), (BOMB, None)])
def test_oversized_sources_are_refused_from_their_header(data: bytes, claimed: str | None) -> None:
    with pytest.raises(GenerationError) as caught:
        image_size(data)
    error = caught.value
    assert (error.code, error.retryable) == (ErrorCode.SOURCE_UNREADABLE, False)
    assert f"{DEFAULT_MAX_PIXELS:,} pixels" in error.message
    if claimed:
        assert claimed in error.message


def test_the_pixel_limit_is_a_setting() -> None:
    assert image_size(png(300, 200), max_pixels=60_000) == (300, 200)
    with pytest.raises(GenerationError) as caught:
        image_size(png(300, 201), max_pixels=60_000)
    assert "300x201" in caught.value.message


def test_sources_must_be_png_jpeg_or_webp() -> None:
    with pytest.raises(GenerationError) as caught:
        probe(gif(32, 32), error=ErrorCode.SOURCE_UNREADABLE)
    assert caught.value.code is ErrorCode.SOURCE_UNREADABLE


@pytest.mark.parametrize("data", [LARGE, BOMB], ids=["144 MP", "400 MP"])
async def test_oversized_results_are_no_result(data: bytes) -> None:
    with pytest.raises(GenerationError) as caught:
        await check_result(data)
    assert (caught.value.code, caught.value.retryable) == (ErrorCode.NO_RESULT, False)


async def test_a_result_in_another_format_is_still_re_encoded() -> None:
    checked = await check_result(gif(40, 30))
    assert (checked.content_type, checked.width, checked.height) == ("image/png", 40, 30)


@pytest.mark.parametrize("data", [LARGE, BOMB], ids=["144 MP", "400 MP"])
async def test_oversized_masks_are_mask_invalid(data: bytes) -> None:
    with pytest.raises(GenerationError) as caught:
        await prepare_mask(data, (64, 64))
    assert (caught.value.code, caught.value.retryable) == (ErrorCode.MASK_INVALID, False)


# --- through the pipeline ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/large.png", "/bomb.png"])
async def test_a_bomb_source_fails_the_generation_at_once(
    pool: AsyncConnectionPool, project_id: uuid.UUID, storage_dir: Path, files: str, path: str
) -> None:
    generation_id = await insert_generation(pool, project_id, original_image_url=files + path)
    provider = RecordingProvider()
    runtime = make_runtime(pool, storage_dir, {"local": provider})
    await asyncio.wait_for(run_generation(runtime, generation_id, attempt=1), 30)
    row = await generation_row(pool, generation_id)
    assert (row["status"], row["error_code"], row["attempts"]) == ("failed", "source_unreadable", 1)
    assert provider.calls == 0


async def insert_edit(
    pool: AsyncConnectionPool, project_id: uuid.UUID, source: str, mask: str, **columns: object
) -> uuid.UUID:
    return await insert_generation(
        pool,
        project_id,
        original_image_url=source,
        mask_url=mask,
        edit_mode="add",
        version=2,
        **columns,
    )


@pytest.mark.parametrize(
    ("source", "mask", "code"),
    [
        ("/large.png", "/mask.png", "source_unreadable"),
        ("/source.png", "/bomb.png", "mask_invalid"),
        ("/source.png", "/large.png", "mask_invalid"),
        ("/source.png", "/anim.gif", "mask_invalid"),
    ],
)
async def test_a_bomb_in_an_edit_fails_it_at_once(
    pool: AsyncConnectionPool,
    project_id: uuid.UUID,
    storage_dir: Path,
    files: str,
    source: str,
    mask: str,
    code: str,
) -> None:
    generation_id = await insert_edit(pool, project_id, files + source, files + mask)
    provider = RecordingProvider()
    runtime = make_runtime(pool, storage_dir, {"local": provider})
    await asyncio.wait_for(run_edit(runtime, generation_id, attempt=1), 30)
    row = await generation_row(pool, generation_id)
    assert (row["status"], row["error_code"]) == ("failed", code)
    assert provider.calls == 0


async def test_an_edit_runs_from_its_columns(
    pool: AsyncConnectionPool, project_id: uuid.UUID, storage_dir: Path, files: str
) -> None:
    generation_id = await insert_edit(pool, project_id, files + "/source.png", files + "/mask.png")
    provider = RecordingProvider()
    runtime = make_runtime(pool, storage_dir, {"local": provider})
    await asyncio.wait_for(run_edit(runtime, generation_id, attempt=1), 30)
    row = await generation_row(pool, generation_id)
    assert (row["status"], provider.calls) == ("completed", 1)


async def test_edits_share_the_attempts_cap(
    pool: AsyncConnectionPool, project_id: uuid.UUID, storage_dir: Path, files: str
) -> None:
    """An edit that keeps crashing its worker is re-queued by the rescuer; the next run past the
    cap gives up instead of running again."""
    generation_id = await insert_edit(pool, project_id, files + "/source.png", files + "/mask.png")
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE image_generations SET status = 'processing', attempts = %s WHERE id = %s",
            (MAX_ATTEMPTS, generation_id),
        )
    provider = RecordingProvider()
    runtime = make_runtime(pool, storage_dir, {"local": provider})
    await run_edit(runtime, generation_id, attempt=1)
    row = await generation_row(pool, generation_id)
    assert (row["status"], row["error_code"]) == ("failed", "timeout")
    assert provider.calls == 0


async def test_an_unexpected_error_ends_the_generation_in_the_catalogue(
    pool: AsyncConnectionPool, project_id: uuid.UUID, storage_dir: Path, files: str
) -> None:
    """The worker fails what it caught itself: nothing waits for the rescuer."""
    generation_id = await insert_edit(pool, project_id, files + "/source.png", files + "/mask.png")
    runtime = make_runtime(pool, storage_dir, {"local": ExplodingProvider(delay_ms=0)})
    with pytest.raises(KeyError):
        await run_edit(runtime, generation_id, attempt=1)
    row = await generation_row(pool, generation_id)
    assert (row["status"], row["error_code"]) == ("failed", "provider_error")
    assert "internal error (KeyError)" in str(row["error_message"])


async def test_a_refused_mask_url_names_the_mask(
    pool: AsyncConnectionPool, project_id: uuid.UUID, storage_dir: Path, files: str
) -> None:
    generation_id = await insert_edit(
        pool, project_id, files + "/source.png", "http://169.254.169.254/mask.png"
    )
    runtime = make_runtime(pool, storage_dir, {"local": RecordingProvider()})
    await run_edit(runtime, generation_id, attempt=1)
    row = await generation_row(pool, generation_id)
    assert (row["status"], row["error_code"]) == ("failed", "mask_invalid")
    assert "original image" not in str(row["error_message"])


async def test_client_metadata_never_steers_the_worker(
    pool: AsyncConnectionPool, project_id: uuid.UUID, storage_dir: Path, files: str
) -> None:
    """editMode and maskUrl in metadata are the client's words: the generation runs as a plain
    generation and the mask URL is never fetched."""
    Files.requested.clear()
    generation_id = await insert_generation(
        pool,
        project_id,
        metadata=Jsonb({"editMode": "add", "maskUrl": files + "/bomb.png"}),
    )
    provider = RecordingProvider()
    runtime = make_runtime(pool, storage_dir, {"local": provider})
    await run_edit(runtime, generation_id, attempt=1)  # even if an edit job were queued for it
    await run_generation(runtime, generation_id, attempt=1)
    row = await generation_row(pool, generation_id)
    assert row["status"] in ("completed", "failed")
    assert "/bomb.png" not in Files.requested
    assert row["metadata"]["maskUrl"] == files + "/bomb.png"  # type: ignore[index]
