"""Structured logs: JSON lines with the generation's context, one per step, no prompts at INFO."""

from __future__ import annotations

import io
import json
import logging
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg_pool import AsyncConnectionPool

from tests.factories import insert_generation
from tests.worker.conftest import make_runtime
from worker.core.logs import JsonFormatter, choose_format, configure_logging
from worker.core.redact import install_log_redaction
from worker.providers.local import LocalProvider
from worker.queue.pipeline import run_generation

PROMPT = "a secret lighthouse only the customer knows about"


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """Logging configured as `imagejobs worker` does it on Render, into a buffer."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    configure_logging({"LOG_FORMAT": "json", "LOG_LEVEL": "INFO"}, stream=stream)
    yield stream
    configure_logging({"LOG_FORMAT": "text"})
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line]


def test_formatter_writes_one_json_object_with_extras() -> None:
    record = logging.LogRecord("worker.x", logging.WARNING, __file__, 1, "took %d ms", (12,), None)
    record.generation_id = uuid.UUID(int=7)
    record.duration_ms = 12.5
    line = json.loads(JsonFormatter().format(record))
    assert line["level"] == "WARNING"
    assert line["logger"] == "worker.x"
    assert line["msg"] == "took 12 ms"
    assert line["generation_id"] == str(uuid.UUID(int=7))
    assert line["duration_ms"] == 12.5
    assert str(line["ts"]).endswith("Z")


def test_formatter_includes_the_exception() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = json.loads(JsonFormatter().format(record))
    assert "RuntimeError: boom" in str(line["exc"])


def test_format_follows_the_terminal_unless_told() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert choose_format({}, Tty()) == "text"
    assert choose_format({}, io.StringIO()) == "json"
    assert choose_format({"LOG_FORMAT": "json"}, Tty()) == "json"
    assert choose_format({"LOG_FORMAT": "text"}, io.StringIO()) == "text"


def test_uvicorn_access_log_goes_through_the_formatter(json_logs: io.StringIO) -> None:
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d', "10.0.0.1:5000", "GET", "/readyz", "1.1", 200
    )
    (line,) = _lines(json_logs)
    assert line["logger"] == "uvicorn.access"
    assert line["msg"] == '10.0.0.1:5000 - "GET /readyz HTTP/1.1" 200'
    assert (line["method"], line["path"], line["status"]) == ("GET", "/readyz", 200)


def test_a_credential_in_a_stream_url_never_reaches_the_access_log(
    json_logs: io.StringIO,
) -> None:
    # The SSE routes take ?access_token= (EventSource cannot send headers); the dashboard uses it.
    key = "ij_" + "k" * 43
    path = f"/v1/projects/p/events?access_token={key}&x=1"
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d', "10.0.0.1:5000", "GET", path, "1.1", 200
    )
    (line,) = _lines(json_logs)
    assert key not in json_logs.getvalue()
    assert line["path"] == "/v1/projects/p/events?access_token=[redacted]&x=1"


def test_redaction_keeps_access_log_fields(json_logs: io.StringIO) -> None:
    install_log_redaction(["a-configured-secret-value"])
    try:
        logging.getLogger("uvicorn.access").info(
            '%s - "%s %s HTTP/%s" %d', "10.0.0.1:5000", "GET", "/readyz", "1.1", 200
        )
    finally:
        logging.setLogRecordFactory(logging.LogRecord)
    (line,) = _lines(json_logs)
    assert (line["method"], line["path"], line["status"]) == ("GET", "/readyz", 200)


async def test_a_generation_logs_each_step_with_id_provider_and_duration(
    pool: AsyncConnectionPool, project_id: uuid.UUID, storage_dir: Path, json_logs: io.StringIO
) -> None:
    generation_id = await insert_generation(pool, project_id, prompt=PROMPT)
    runtime = make_runtime(pool, storage_dir, {"local": LocalProvider(delay_ms=0)})
    await run_generation(runtime, generation_id, attempt=1)

    output = json_logs.getvalue()
    assert PROMPT not in output
    mine = [line for line in _lines(json_logs) if line.get("generation_id") == str(generation_id)]
    steps = [(line["step"], line["status"]) for line in mine if "duration_ms" in line]
    assert steps == [
        ("fetching", "done"),
        ("processing", "done"),
        ("saving", "completed"),
        ("completed", "completed"),
    ]
    for line in mine:
        assert line["provider"] == "local"
        assert line["level"] == "INFO"
    assert all(float(str(line["duration_ms"])) >= 0 for line in mine if "duration_ms" in line)


async def test_prompts_are_logged_only_when_asked(
    pool: AsyncConnectionPool, project_id: uuid.UUID, storage_dir: Path
) -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging({"LOG_FORMAT": "json", "LOG_PROMPTS": "true"}, stream=stream)
        generation_id = await insert_generation(pool, project_id, prompt=PROMPT)
        runtime = make_runtime(pool, storage_dir, {"local": LocalProvider(delay_ms=0)})
        await run_generation(runtime, generation_id, attempt=1)
    finally:
        configure_logging({"LOG_FORMAT": "text"})
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    prompts = [line for line in _lines(stream) if line.get("prompt") == PROMPT]
    assert len(prompts) == 1 and prompts[0]["level"] == "INFO"


@pytest.mark.parametrize(
    "query",
    [
        "access%5Ftoken={key}",
        "ACCESS_TOKEN={key}",
        "%61ccess_token={key}",
        "x=1&access%5ftoken={key}",
        "api_key={key}",
        "token={key}&x=1",
    ],
)
def test_encoded_credential_names_are_redacted_in_the_access_log(
    json_logs: io.StringIO, query: str
) -> None:
    key = "ij_" + "k" * 43
    path = "/v1/projects/p/events?" + query.format(key=key)
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d', "10.0.0.1:5000", "GET", path, "1.1", 200
    )
    assert key not in json_logs.getvalue()
    (line,) = _lines(json_logs)
    assert "[redacted]" in str(line["path"])
