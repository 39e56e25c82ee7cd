"""CHECK constraints: http(s) URLs only, no image bytes anywhere, bounded progress, known enums."""

from __future__ import annotations

import base64
import io
import os
import uuid
from typing import Any

import psycopg
import pytest
from PIL import Image
from psycopg import errors
from psycopg.types.json import Jsonb

from tests.sql.helpers import Conn, generation, insert_generation, update_generation


def image_bytes(fmt: str, side: int = 24) -> bytes:
    """A small noisy image (noise keeps it from compressing to nothing)."""
    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


PNG_BYTES = image_bytes("PNG")
PNG = base64.b64encode(PNG_BYTES).decode()
JPEG = base64.b64encode(image_bytes("JPEG")).decode()
GIF = base64.b64encode(image_bytes("GIF")).decode()
WEBP = base64.b64encode(image_bytes("WEBP")).decode()
WRAPPED_PNG = base64.encodebytes(PNG_BYTES).decode()  # MIME style: lines of 76 characters

# Values that carry image bytes, in every shape a client might send them.
INLINE_IMAGES = {
    "png-data-url": f"data:image/png;base64,{PNG}",
    "jpeg-data-url-uppercase": f"DATA:IMAGE/JPEG;BASE64,{JPEG}",
    "data-url-with-params": f"data:image/webp;name=x.webp;base64,{WEBP}",
    "data-url-prefix-only": "data:image/png;base64,",
    "svg-data-url": 'data:image/svg+xml,<svg xmlns="http://www.w3.org/2000/svg"><rect/></svg>',
    "svg-data-url-with-charset": "data:image/svg+xml;charset=utf-8,%3Csvg%3E%3C/svg%3E",
    "percent-encoded-png-data-url": "data:image/png,%89PNG%0D%0A%1A%0A%00%00%00%0DIHDR",
    "bare-png-base64": PNG,
    "bare-jpeg-base64": JPEG,
    "bare-gif-base64": GIF,
    "bare-webp-base64": WEBP,
    "line-wrapped-png-base64": WRAPPED_PNG,
    "crlf-wrapped-png-base64": WRAPPED_PNG.replace("\n", "\r\n"),
    # 4000 base64 characters of anything: long enough to be a payload, not an id or a hash.
    "long-base64-run": base64.b64encode(os.urandom(3000)).decode(),
    "png-inside-text": f"use this as a reference: {PNG} thanks",
}

BAD_URLS = {
    "data-url": f"data:image/png;base64,{PNG}",
    "ftp": "ftp://example.com/a.png",
    "file": "file:///etc/passwd",
    "javascript": "javascript:alert(1)",
    "relative": "/files/a.png",
    "bare-host": "example.com/a.png",
    "empty-host": "http://",
    "space": "https://example.com/a b.png",
    "too-long": "https://example.com/" + "a-" * 2100,
}
GOOD_URLS = ["https://cdn.example.com/a.png", "http://localhost:8000/files/x.png?sig=1#f"]
URL_COLUMNS = ["original_image_url", "result_image_url", "webhook_url"]


def assert_constraint(exc: pytest.ExceptionInfo[psycopg.Error], name: str) -> None:
    assert exc.value.diag.constraint_name == name, exc.value


@pytest.mark.parametrize("column", URL_COLUMNS)
@pytest.mark.parametrize("url", BAD_URLS.values(), ids=BAD_URLS.keys())
async def test_url_columns_reject_anything_but_http(
    conn: Conn, project_id: uuid.UUID, column: str, url: str
) -> None:
    with pytest.raises(errors.CheckViolation) as exc:
        await insert_generation(conn, project_id, **{column: url})
    assert_constraint(exc, "image_generations_urls_http")
    generation_id = await insert_generation(conn, project_id)
    with pytest.raises(errors.CheckViolation) as exc:
        await update_generation(conn, generation_id, **{column: url})
    assert_constraint(exc, "image_generations_urls_http")
    assert (await generation(conn, generation_id))[column] is None


@pytest.mark.parametrize("column", URL_COLUMNS)
async def test_url_columns_accept_http_urls(conn: Conn, project_id: uuid.UUID, column: str) -> None:
    for url in GOOD_URLS:
        generation_id = await insert_generation(conn, project_id, **{column: url})
        assert (await generation(conn, generation_id))[column] == url


async def insert_event(conn: Conn, generation_id: uuid.UUID, **columns: Any) -> None:
    values = {"kind": "log", "status": "pending", "step": "queued", "progress": 0, **columns}
    await conn.execute(
        "INSERT INTO image_events (generation_id, project_id, workspace_id, kind, status, step,"
        " progress, message, data)"
        " SELECT id, project_id, workspace_id, %(kind)s, %(status)s, %(step)s, %(progress)s,"
        " %(message)s, %(data)s FROM image_generations WHERE id = %(id)s",
        {"message": None, "data": Jsonb({}), **values, "id": generation_id},
    )


async def insert_node(conn: Conn, node_data: dict[str, Any]) -> None:
    await conn.execute(
        "INSERT INTO workflow_nodes (id, workflow_id, node_data) VALUES ('n1', %s, %s)",
        (uuid.uuid4(), Jsonb(node_data)),
    )


async def insert_delivery(conn: Conn, payload: dict[str, Any]) -> None:
    await conn.execute(
        "INSERT INTO webhook_deliveries (id, provider, payload) VALUES (%s, 'generic', %s)",
        (f"msg_{uuid.uuid4().hex}", Jsonb(payload)),
    )


def nested(value: str) -> dict[str, Any]:
    """The value deep inside a JSON document, as a client might bury it."""
    return {"data": {"images": [{"url": "https://ok.example.com/a.png"}, {"b64": value}]}}


# (where, constraint): each writes the value into one text or JSON column.
PLACES = [
    ("image_generations.prompt", "image_generations_no_inline_images"),
    ("image_generations.prompt_spec", "image_generations_no_inline_images"),
    ("image_generations.metadata", "image_generations_no_inline_images"),
    ("image_generations.error_message", "image_generations_no_inline_images"),
    ("image_events.message", "image_events_no_inline_images"),
    ("image_events.data", "image_events_no_inline_images"),
    ("workflow_nodes.node_data", "workflow_nodes_no_inline_images"),
    ("webhook_deliveries.payload", "webhook_deliveries_no_inline_images"),
]


async def write_into(conn: Conn, project_id: uuid.UUID, place: str, value: str) -> None:
    if place == "image_generations.prompt":
        await insert_generation(conn, project_id, prompt=value)
    elif place == "image_generations.prompt_spec":
        spec = {"base_prompt": "a fox", "reference": nested(value)}
        await insert_generation(conn, project_id, prompt=None, prompt_spec=Jsonb(spec))
    elif place == "image_generations.metadata":
        await insert_generation(conn, project_id, metadata=Jsonb({"editedFrom": nested(value)}))
    elif place == "image_generations.error_message":
        generation_id = await insert_generation(conn, project_id)
        await update_generation(conn, generation_id, status="failed", error_message=value)
    elif place == "image_events.message":
        await insert_event(conn, await insert_generation(conn, project_id), message=value)
    elif place == "image_events.data":
        await insert_event(
            conn, await insert_generation(conn, project_id), data=Jsonb(nested(value))
        )
    elif place == "workflow_nodes.node_data":
        await insert_node(conn, {"imageUrl": value, "status": "completed"})
    elif place == "webhook_deliveries.payload":
        await insert_delivery(conn, nested(value))
    else:  # pragma: no cover - the table above names every place
        raise AssertionError(place)


@pytest.mark.parametrize(("place", "constraint"), PLACES, ids=[p for p, _ in PLACES])
@pytest.mark.parametrize("value", INLINE_IMAGES.values(), ids=INLINE_IMAGES.keys())
async def test_no_column_accepts_image_bytes(
    conn: Conn, project_id: uuid.UUID, place: str, constraint: str, value: str
) -> None:
    with pytest.raises(errors.CheckViolation) as exc:
        await write_into(conn, project_id, place, value)
    assert_constraint(exc, constraint)


@pytest.mark.parametrize(("place", "constraint"), PLACES, ids=[p for p, _ in PLACES])
async def test_ordinary_values_are_accepted(
    conn: Conn, project_id: uuid.UUID, place: str, constraint: str
) -> None:
    """The checks are not so broad that ordinary text, ids or hashes trip them."""
    value = (
        "a data-driven poster: metadata about the image/png format, base64 explained; "
        f"ref https://cdn.example.com/{uuid.uuid4()}.png sha256 {os.urandom(32).hex()} "
        + base64.b64encode(os.urandom(150)).decode()
    )
    await write_into(conn, project_id, place, value)


async def test_progress_must_stay_within_0_and_100(conn: Conn, project_id: uuid.UUID) -> None:
    generation_id = await insert_generation(conn, project_id)
    await update_generation(conn, generation_id, status="processing", progress=100)
    for progress in (-1, 101, 1000):
        with pytest.raises(errors.CheckViolation) as exc:
            await update_generation(conn, generation_id, progress=progress)
        assert_constraint(exc, "image_generations_progress_check")
    with pytest.raises(errors.CheckViolation) as exc:
        await insert_event(conn, generation_id, progress=101)
    assert_constraint(exc, "image_events_progress_check")
    assert (await generation(conn, generation_id))["progress"] == 100


@pytest.mark.parametrize(
    ("columns", "constraint"),
    [
        ({"status": "running"}, "image_generations_status_check"),
        ({"status": "done"}, "image_generations_status_check"),
        ({"step": "thinking", "status": "processing"}, "image_generations_step_check"),
        ({"error_code": "oops", "status": "failed"}, "image_generations_error_code_check"),
    ],
)
async def test_unknown_enum_values_are_rejected(
    conn: Conn, project_id: uuid.UUID, columns: dict[str, str], constraint: str
) -> None:
    with pytest.raises(errors.CheckViolation) as exc:
        await insert_generation(conn, project_id, **columns)
    assert_constraint(exc, constraint)


@pytest.mark.parametrize("provider", ["midjourney", "OpenAI"])
async def test_providers_outside_the_providers_table_are_rejected(
    conn: Conn, project_id: uuid.UUID, provider: str
) -> None:
    with pytest.raises(errors.ForeignKeyViolation) as exc:
        await insert_generation(conn, project_id, provider=provider, model="v6")
    assert_constraint(exc, "image_generations_provider_fkey")


async def test_unknown_provider_without_a_model_is_rejected(
    conn: Conn, project_id: uuid.UUID
) -> None:
    # No default model exists for it, so NOT NULL (model) may fire before the provider CHECK.
    with pytest.raises(errors.IntegrityError):
        await insert_generation(conn, project_id, provider="midjourney")


async def test_unknown_status_is_rejected_on_update(conn: Conn, project_id: uuid.UUID) -> None:
    generation_id = await insert_generation(conn, project_id)
    with pytest.raises(errors.CheckViolation):
        await update_generation(conn, generation_id, status="running")
    assert (await generation(conn, generation_id))["status"] == "pending"
