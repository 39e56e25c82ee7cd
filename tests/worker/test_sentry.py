"""Errors reach Sentry with their context; permanent refusals and prompts do not."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sentry_sdk
from litestar import get
from litestar.testing import AsyncTestClient
from procrastinate import JobContext
from procrastinate.jobs import Job
from procrastinate.middleware import compose
from procrastinate.tasks import Task
from psycopg_pool import AsyncConnectionPool

from api.app import create_app
from tests.conftest import Tenant
from tests.emulators.sentry import SentryInbox
from tests.emulators.server import serve
from tests.factories import insert_generation
from tests.worker.conftest import make_runtime
from worker.core import observability
from worker.core.config import load_settings
from worker.core.errors import ErrorCode, GenerationError
from worker.providers.base import ImageRequest, ImageResult
from worker.queue import daemon, tasks

PROMPT = "a portrait of my neighbour, private"


class BrokenProvider:
    """A provider whose client library fails in a way nobody planned for."""

    name = "local"
    default_side = 256

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def generate(self, request: ImageRequest) -> ImageResult:
        raise self.error

    async def edit(self, request: ImageRequest) -> ImageResult:
        raise self.error


@pytest.fixture
def inbox() -> Iterator[tuple[SentryInbox, str]]:
    inbox = SentryInbox()
    with serve(inbox.app()) as url:
        yield inbox, f"http://public@{url.removeprefix('http://')}/1"
    sentry_sdk.get_client().close()
    # Back to the SDK's no-op client for the tests that follow (as when SENTRY_DSN is unset).
    sentry_sdk.get_global_scope().set_client(None)
    observability._State.enabled = False


def _context(runtime: Any, task_name: str, generation_id: uuid.UUID, attempts: int) -> JobContext:
    job = Job(
        id=42,
        queue=tasks.QUEUE,
        lock=None,
        queueing_lock=None,
        task_name=task_name,
        task_kwargs={"generation_id": str(generation_id)},
        attempts=attempts,
    )
    return JobContext(
        app=tasks.app,
        job=job,
        start_timestamp=time.time(),
        additional_context={"runtime": runtime},
        abort_reason=lambda: None,
    )


async def _run(task: Task[Any, Any, Any], context: JobContext, **kwargs: Any) -> Any:
    """The task as the worker daemon runs it: inside the middleware it installs."""

    async def run_task() -> Any:
        return await task(context, **kwargs)

    return await compose(daemon.TASK_MIDDLEWARE, run_task, context, None)()


def _error_events(inbox: SentryInbox) -> list[dict[str, Any]]:
    return [event for event in inbox.events if event.get("level") == "error"]


async def test_an_unexpected_worker_error_is_reported_with_its_tags(
    pool: AsyncConnectionPool,
    project_id: uuid.UUID,
    storage_dir: Path,
    inbox: tuple[SentryInbox, str],
) -> None:
    received, dsn = inbox
    assert observability.init_sentry(dsn, component="worker", environment="test")
    generation_id = await insert_generation(pool, project_id, prompt=PROMPT)
    runtime = make_runtime(pool, storage_dir, {"local": BrokenProvider(KeyError("choices"))})
    context = _context(runtime, "generate_image", generation_id, attempts=1)
    with pytest.raises(KeyError):
        await _run(tasks.generate_image, context, generation_id=str(generation_id))
    sentry_sdk.flush(timeout=5)

    (event,) = received.wait_for(1)
    tags = event["tags"]
    assert tags["generation_id"] == str(generation_id)
    assert tags["provider"] == "local"
    assert tags["attempt"] == "2"
    assert tags["task"] == "generate_image"
    assert tags["component"] == "worker"
    assert event["exception"]["values"][-1]["type"] == "KeyError"
    assert PROMPT not in str(event)
    assert received.projects == ["1"]


async def test_a_permanent_refusal_is_not_reported(
    pool: AsyncConnectionPool,
    project_id: uuid.UUID,
    storage_dir: Path,
    inbox: tuple[SentryInbox, str],
) -> None:
    received, dsn = inbox
    observability.init_sentry(dsn, component="worker", environment="test")
    refused = await insert_generation(pool, project_id, prompt=PROMPT)
    runtime = make_runtime(
        pool, storage_dir, {"local": BrokenProvider(GenerationError(ErrorCode.CONTENT_POLICY))}
    )
    await _run(
        tasks.generate_image,
        _context(runtime, "generate_image", refused, 0),
        generation_id=str(refused),
    )
    # A missing record is refused by raising: the filter drops it too.
    missing = uuid.uuid4()
    with pytest.raises(GenerationError):
        await _run(
            tasks.generate_image,
            _context(runtime, "generate_image", missing, 0),
            generation_id=str(missing),
        )
    # A control event proves the endpoint was reachable while the refusals were dropped.
    sentry_sdk.capture_message("control", level="error")
    sentry_sdk.flush(timeout=5)
    events = received.wait_for(1)
    assert [event.get("message") for event in events] == ["control"]


async def test_an_unexpected_api_error_is_reported(
    database_url: str, tmp_path: Path, inbox: tuple[SentryInbox, str], tenant: Tenant
) -> None:
    received, dsn = inbox
    observability.init_sentry(dsn, component="api", environment="test")

    @get("/v1/boom", include_in_schema=False)
    async def boom() -> None:
        raise ZeroDivisionError("unexpected")

    settings = load_settings(
        {"DATABASE_URL": database_url, "LOCAL_STORAGE_DIR": str(tmp_path / "storage")}
    )
    app = create_app(settings)
    app.register(boom)
    async with AsyncTestClient(app=app) as client:
        # The integration parses request bodies itself: bad JSON must stay a 400, unreported.
        malformed = await client.post(
            "/v1/generations",
            content=b'{"prompt": ',
            headers={**tenant.headers, "content-type": "application/json"},
        )
        response = await client.get("/v1/boom", headers={"authorization": "Bearer secret-key"})
    assert malformed.status_code == 400, malformed.text
    assert malformed.json()["errors"][0]["field"] == "body"
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("application/problem+json")
    sentry_sdk.flush(timeout=5)

    received.wait_for(1)
    (event,) = _error_events(received)
    assert event["exception"]["values"][-1]["type"] == "ZeroDivisionError"
    assert event["tags"]["component"] == "api"
    assert "secret-key" not in str(event)


async def test_a_run_cut_short_by_a_lost_database_is_not_reported(
    inbox: tuple[SentryInbox, str],
) -> None:
    received, dsn = inbox
    observability.init_sentry(dsn, component="worker", environment="test")
    context = _context(None, "generate_image", uuid.uuid4(), 0)

    async def lost() -> None:
        raise psycopg.OperationalError("the connection is lost")

    with pytest.raises(psycopg.OperationalError):
        await compose(daemon.TASK_MIDDLEWARE, lost, context, None)()
    sentry_sdk.capture_message("control", level="error")
    sentry_sdk.flush(timeout=5)
    assert [event.get("message") for event in received.wait_for(1)] == ["control"]
