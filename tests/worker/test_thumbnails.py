"""Thumbnails: every completed result gets a 256 px WebP beside it, written in the same update
that completes the generation; a preview that cannot be made never fails the generation."""

from __future__ import annotations

import io
import logging
import struct
import threading
import uuid
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image, features
from psycopg_pool import AsyncConnectionPool

from tests.factories import insert_generation
from tests.worker.conftest import generation_row, make_runtime
from worker.core.errors import ErrorCode, GenerationError
from worker.core.images import check_result, probe, result_thumbnail, thumbnail
from worker.providers.base import ImageRequest, ImageResult
from worker.providers.local import LocalProvider
from worker.queue.pipeline import run_edit, run_generation


def encode(image: Image.Image, format: str = "PNG") -> bytes:
    out = io.BytesIO()
    image.save(out, format=format)
    return out.getvalue()


def png(width: int, height: int, mode: str = "RGB") -> bytes:
    return encode(Image.new(mode, (width, height), "teal"))


def undecodable_png(width: int = 64, height: int = 64) -> bytes:
    """A PNG whose structure is sound (signature, chunks, CRCs: what the gate verifies from the
    header) but whose pixel data is not a zlib stream: stored as it is, it cannot be decoded."""
    data = png(width, height)
    out, offset = bytearray(data[:8]), 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        if kind == b"IDAT":
            body = b"\xff" * len(body)
        out += struct.pack(">I", len(body)) + kind + body
        out += struct.pack(">I", zlib.crc32(kind + body))
        offset += 12 + length
    return bytes(out)


def webp_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "WEBP"
        image.load()
        return image.size


# --- the function ------------------------------------------------------------------------------


def test_this_pillow_encodes_webp() -> None:
    """The PNG fallback is for a Pillow built without libwebp; the wheels we run have it."""
    assert features.check("webp")


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((1024, 1024), (256, 256)),
        ((1536, 1024), (256, 171)),  # 170.67 rounds to the nearest pixel
        ((1024, 1536), (171, 256)),
        ((100, 50), (100, 50)),  # never enlarged
        ((4000, 3), (256, 1)),  # never below one pixel
    ],
)
def test_the_longest_side_is_256_and_the_aspect_is_kept(
    size: tuple[int, int], expected: tuple[int, int]
) -> None:
    data, content_type = thumbnail(png(*size))
    assert content_type == "image/webp"
    assert webp_size(data) == expected


@pytest.mark.parametrize("format", ["PNG", "JPEG", "WEBP"])
def test_every_kept_result_format_is_thumbnailed(format: str) -> None:
    data, _ = thumbnail(encode(Image.new("RGB", (600, 300), "orange"), format))
    assert webp_size(data) == (256, 128)


def test_transparency_is_kept_and_palettes_are_expanded() -> None:
    rgba = Image.new("RGBA", (512, 512), (255, 0, 0, 0))
    with Image.open(io.BytesIO(thumbnail(encode(rgba))[0])) as image:
        assert image.mode == "RGBA" and image.getchannel("A").getextrema() == (0, 0)
    palette = encode(Image.new("P", (512, 256)))
    assert webp_size(thumbnail(palette)[0]) == (256, 128)


def test_the_longest_side_is_a_parameter() -> None:
    assert webp_size(thumbnail(png(1000, 500), longest=64)[0]) == (64, 32)


async def test_a_result_the_gate_admits_but_no_decoder_can_read_fails_the_thumbnail() -> None:
    data = undecodable_png()
    assert probe(data, error=ErrorCode.NO_RESULT, formats=None).format == "PNG"
    checked = await check_result(data)  # PNG is kept as it is: the gate reads only headers
    with pytest.raises(GenerationError) as caught:
        await result_thumbnail(checked)
    assert (caught.value.code, caught.value.retryable) == (ErrorCode.NO_RESULT, False)


# --- through the pipeline ----------------------------------------------------------------------


class UndecodableProvider(LocalProvider):
    """A provider whose result passes the gate but cannot be decoded (a corrupt pixel stream)."""

    async def generate(self, request: ImageRequest) -> ImageResult:
        return ImageResult(data=undecodable_png(), content_type="image/png", metadata={})


async def test_a_completed_generation_has_its_thumbnail_beside_the_result(
    pool: AsyncConnectionPool, project_id: uuid.UUID, storage_dir: Path
) -> None:
    generation_id = await insert_generation(
        pool, project_id, prompt_spec='{"size": "768x512", "seed": 4}'
    )
    runtime = make_runtime(pool, storage_dir, {"local": LocalProvider(delay_ms=0)})
    await run_generation(runtime, generation_id, attempt=1)

    row = await generation_row(pool, generation_id)
    assert row["status"] == "completed"
    stem = f"{row['workspace_id']}/{project_id}/{generation_id}"
    assert row["result_image_url"] == f"http://files.test/files/{stem}.png"
    assert row["thumbnail_url"] == f"http://files.test/files/{stem}-thumb.webp"
    assert webp_size((storage_dir / f"{stem}-thumb.webp").read_bytes()) == (256, 171)


async def test_a_thumbnail_that_cannot_be_made_still_completes_the_generation(
    pool: AsyncConnectionPool,
    project_id: uuid.UUID,
    storage_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    generation_id = await insert_generation(pool, project_id)
    runtime = make_runtime(pool, storage_dir, {"local": UndecodableProvider(delay_ms=0)})
    with caplog.at_level(logging.WARNING, logger="worker.queue.pipeline"):
        await run_generation(runtime, generation_id, attempt=1)

    row = await generation_row(pool, generation_id)
    assert (row["status"], row["error_code"], row["thumbnail_url"]) == ("completed", None, None)
    assert str(row["result_image_url"]).endswith(f"/{generation_id}.png")
    stem = f"{row['workspace_id']}/{project_id}/{generation_id}"
    assert not (storage_dir / f"{stem}-thumb.webp").exists()
    [warning] = [r for r in caplog.records if "no thumbnail" in r.getMessage()]
    assert warning.levelno == logging.WARNING and str(generation_id) in warning.getMessage()


async def test_a_thumbnail_that_cannot_be_stored_is_a_storage_error(
    pool: AsyncConnectionPool, project_id: uuid.UUID, storage_dir: Path
) -> None:
    """Uploading the preview is part of storing the result: the same storage_error as the
    result's upload, never a completion that silently lost its thumbnail."""
    generation_id = await insert_generation(pool, project_id)
    row = await generation_row(pool, generation_id)
    # A directory where the thumbnail's file should go: the result lands, its preview cannot.
    (storage_dir / f"{row['workspace_id']}/{project_id}/{generation_id}-thumb.webp").mkdir(
        parents=True
    )
    runtime = make_runtime(pool, storage_dir, {"local": LocalProvider(delay_ms=0)})
    await run_generation(runtime, generation_id, attempt=1)

    row = await generation_row(pool, generation_id)
    assert (row["status"], row["error_code"], row["thumbnail_url"]) == (
        "failed",
        "storage_error",
        None,
    )


class Source(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def source_url() -> Iterator[str]:
    Source.body = png(300, 600)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Source)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/source.png"
    server.shutdown()


async def test_an_edit_gets_a_thumbnail_too(
    pool: AsyncConnectionPool, project_id: uuid.UUID, storage_dir: Path, source_url: str
) -> None:
    # The server answers every path with one opaque PNG: as a mask, "repaint everything".
    generation_id = await insert_generation(
        pool,
        project_id,
        original_image_url=source_url,
        mask_url=source_url.replace("source.png", "mask.png"),
        edit_mode="add",
        version=2,
    )
    runtime = make_runtime(pool, storage_dir, {"local": LocalProvider(delay_ms=0)})
    await run_edit(runtime, generation_id, attempt=1)

    row = await generation_row(pool, generation_id)
    assert row["status"] == "completed", row["error_message"]
    assert str(row["thumbnail_url"]).endswith(f"/{generation_id}-thumb.webp")
    stem = f"{row['workspace_id']}/{project_id}/{generation_id}"
    assert webp_size((storage_dir / f"{stem}-thumb.webp").read_bytes()) == (128, 256)
