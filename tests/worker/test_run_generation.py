"""The lifecycle of one generation, driven in-process through `run_generation`."""

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
from psycopg_pool import AsyncConnectionPool

from tests.factories import insert_generation
from tests.worker.conftest import event_trail, generation_row, make_runtime
from worker.core import store
from worker.core.errors import MAX_ATTEMPTS, ErrorCode, GenerationError
from worker.providers.base import ImageRequest, ImageResult
from worker.providers.local import LocalProvider
from worker.queue.pipeline import run_generation
from worker.queue.tasks import TransientRetry
from worker.storage.local import LocalStorage


class FailingProvider:
    """A provider that fails the way a real one does, with a catalogue error."""

    name = "local"
    default_side = 256

    def __init__(self, code: ErrorCode) -> None:
        self.code = code
        self.calls = 0

    async def generate(self, request: ImageRequest) -> ImageResult:
        self.calls += 1
        raise GenerationError(self.code, "from the provider")

    async def edit(self, request: ImageRequest) -> ImageResult:
        return await self.generate(request)


class CancellingProvider(LocalProvider):
    """Renders for real, but the user cancels (with SQL) while the model is working."""

    def __init__(self, pool: AsyncConnectionPool, generation_id: uuid.UUID) -> None:
        super().__init__(delay_ms=0)
        self.pool = pool
        self.generation_id = generation_id

    async def generate(self, request: ImageRequest) -> ImageResult:
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE image_generations SET status = 'cancelled' WHERE id = %s",
                (self.generation_id,),
            )
        return await super().generate(request)


async def test_a_generation_walks_every_step_to_completed(
    pool: AsyncConnectionPool, project_id: uuid.UUID, storage_dir: Path
) -> None:
    generation_id = await insert_generation(
        pool, project_id, prompt_spec='{"size": "128x96", "seed": 4}'
    )
    runtime = make_runtime(pool, storage_dir, {"local": LocalProvider(delay_ms=0)})
    await run_generation(runtime, generation_id, attempt=1)

    row = await generation_row(pool, generation_id)
    assert (row["status"], row["step"], row["progress"], row["attempts"]) == (
        "completed",
        "completed",
        100,
        1,
    )
    workspace_id = row["workspace_id"]
    key = f"{workspace_id}/{project_id}/{generation_id}.png"
    assert row["result_image_url"] == f"http://files.test/files/{key}"
    with Image.open(storage_dir / key) as image:
        assert image.size == (128, 96)
    metadata = row["metadata"]
    assert isinstance(metadata, dict)
    assert (metadata["width"], metadata["height"], metadata["model"]) == (
        128,
        96,
        "local:pillow-v1",
    )
    assert row["started_at"] is not None and row["finished_at"] is not None

    assert await event_trail(pool, generation_id) == [
        ("status", "pending", "queued", 0),
        ("status", "processing", "fetching", 10),
        ("progress", "processing", "processing", 50),
        ("progress", "processing", "saving", 80),
        ("status", "completed", "completed", 100),
    ]


async def test_a_permanent_error_fails_at_once_with_its_code(
    pool: AsyncConnectionPool, project_id: uuid.UUID, storage_dir: Path
) -> None:
    generation_id = await insert_generation(pool, project_id)
    provider = FailingProvider(ErrorCode.CONTENT_POLICY)
    await run_generation(
        make_runtime(pool, storage_dir, {"local": provider}), generation_id, attempt=1
    )
    row = await generation_row(pool, generation_id)
    assert (row["status"], row["error_code"]) == ("failed", "content_policy")
    assert row["error_message"] == "The provider refused the prompt: from the provider"
    assert (await event_trail(pool, generation_id))[-1] == ("status", "failed", "failed", 50)


async def test_a_transient_error_is_retried_then_fails_on_the_last_attempt(
    pool: AsyncConnectionPool, project_id: uuid.UUID, storage_dir: Path
) -> None:
    generation_id = await insert_generation(pool, project_id)
    runtime = make_runtime(pool, storage_dir, {"local": FailingProvider(ErrorCode.PROVIDER_ERROR)})
    for attempt in (1, 2):
        with pytest.raises(GenerationError):
            await run_generation(runtime, generation_id, attempt=attempt)
        row = await generation_row(pool, generation_id)
        assert row["status"] == "processing"
    await run_generation(runtime, generation_id, attempt=3)
    row = await generation_row(pool, generation_id)
    assert (row["status"], row["error_code"], row["attempts"]) == ("failed", "provider_error", 3)
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT message FROM image_events WHERE generation_id = %s AND kind = 'error' ORDER BY id",
            (generation_id,),
        )
        logs = [str(r[0]) for r in await cur.fetchall()]
    assert len(logs) == 2
    assert "retrying (attempt 1 of 3)" in logs[0]


def test_the_retry_strategy_retries_only_transient_errors_with_backoff() -> None:
    from procrastinate.jobs import Job

    strategy = TransientRetry()
    job = Job(
        id=1, queue="images", lock=None, queueing_lock=None, task_name="generate_image", attempts=0
    )
    transient = GenerationError(ErrorCode.PROVIDER_ERROR)
    assert (
        strategy.get_retry_decision(exception=GenerationError(ErrorCode.CONTENT_POLICY), job=job)
        is None
    )
    assert strategy.get_retry_decision(exception=ValueError("bug"), job=job) is None
    first = strategy.get_retry_decision(exception=transient, job=job)
    second = strategy.get_retry_decision(exception=transient, job=job.evolve(attempts=1))
    assert first is not None and second is not None
    assert first.retry_at is not None and second.retry_at is not None
    assert second.retry_at > first.retry_at
    assert strategy.get_retry_decision(exception=transient, job=job.evolve(attempts=2)) is None
    honoured = strategy.get_retry_decision(
        exception=GenerationError(ErrorCode.PROVIDER_ERROR, retry_after=60), job=job
    )
    assert honoured is not None and honoured.retry_at is not None
    assert (honoured.retry_at - first.retry_at).total_seconds() > 50


async def test_a_cancel_during_generation_is_never_overwritten(
    pool: AsyncConnectionPool, project_id: uuid.UUID, storage_dir: Path
) -> None:
    generation_id = await insert_generation(pool, project_id)
    provider = CancellingProvider(pool, generation_id)
    await run_generation(
        make_runtime(pool, storage_dir, {"local": provider}), generation_id, attempt=1
    )
    row = await generation_row(pool, generation_id)
    assert (row["status"], row["error_code"], row["result_image_url"]) == (
        "cancelled",
        "cancelled",
        None,
    )


async def test_a_cancelled_generation_does_not_run(
    pool: AsyncConnectionPool, project_id: uuid.UUID, storage_dir: Path
) -> None:
    generation_id = await insert_generation(pool, project_id)
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE image_generations SET status = 'cancelled' WHERE id = %s", (generation_id,)
        )
    provider = FailingProvider(ErrorCode.PROVIDER_ERROR)
    await run_generation(
        make_runtime(pool, storage_dir, {"local": provider}), generation_id, attempt=1
    )
    assert provider.calls == 0
    assert (await generation_row(pool, generation_id))["status"] == "cancelled"


async def test_a_missing_record_is_not_found(pool: AsyncConnectionPool, storage_dir: Path) -> None:
    runtime = make_runtime(pool, storage_dir, {"local": LocalProvider(delay_ms=0)})
    with pytest.raises(GenerationError) as caught:
        await run_generation(runtime, uuid.uuid4(), attempt=1)
    assert caught.value.code is ErrorCode.NOT_FOUND
    assert not caught.value.retryable


async def test_a_storage_failure_is_storage_error(
    pool: AsyncConnectionPool, project_id: uuid.UUID, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the storage directory should be")
    generation_id = await insert_generation(pool, project_id)
    await run_generation(
        make_runtime(pool, blocker, {"local": LocalProvider(delay_ms=0)}), generation_id, attempt=1
    )
    row = await generation_row(pool, generation_id)
    assert (row["status"], row["error_code"]) == ("failed", "storage_error")


class SourceServer(BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, str, bytes]] = {}

    def do_GET(self) -> None:
        status, content_type, body = self.routes.get(self.path, (404, "text/plain", b"missing"))
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def source_server() -> Iterator[str]:
    png = io.BytesIO()
    Image.new("RGB", (80, 60), (10, 200, 10)).save(png, format="PNG")
    SourceServer.routes = {
        "/source.png": (200, "image/png", png.getvalue()),
        "/not-an-image": (200, "image/png", b"<html>surprise</html>"),
    }
    server = ThreadingHTTPServer(("127.0.0.1", 0), SourceServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize(
    ("path", "status", "error_code"),
    [
        ("/source.png", "completed", None),
        ("/missing.png", "failed", "source_unreachable"),
        ("/not-an-image", "failed", "source_unreadable"),
    ],
)
async def test_image_to_image_downloads_and_checks_the_source(
    pool: AsyncConnectionPool,
    project_id: uuid.UUID,
    storage_dir: Path,
    source_server: str,
    path: str,
    status: str,
    error_code: str | None,
) -> None:
    generation_id = await insert_generation(
        pool, project_id, original_image_url=source_server + path
    )
    runtime = make_runtime(pool, storage_dir, {"local": LocalProvider(delay_ms=0)})
    await asyncio.wait_for(run_generation(runtime, generation_id, attempt=1), 30)
    row = await generation_row(pool, generation_id)
    assert (row["status"], row["error_code"]) == (status, error_code)
    steps = [step for _, _, step, _ in await event_trail(pool, generation_id)]
    assert "uploading" in steps


async def test_an_unconfigured_provider_fails_at_once(
    pool: AsyncConnectionPool, project_id: uuid.UUID, storage_dir: Path
) -> None:
    generation_id = await insert_generation(pool, project_id, provider="openai")
    runtime = make_runtime(pool, storage_dir, {"local": LocalProvider(delay_ms=0)})
    await run_generation(runtime, generation_id, attempt=1)
    row = await generation_row(pool, generation_id)
    assert (row["status"], row["error_code"]) == ("failed", "provider_error")
    assert "not configured" in str(row["error_message"])


async def test_a_model_the_provider_does_not_serve_fails_at_once_naming_what_to_use(
    pool: AsyncConnectionPool, project_id: uuid.UUID, storage_dir: Path
) -> None:
    generation_id = await insert_generation(pool, project_id, model="pillow-v0")
    provider = FailingProvider(ErrorCode.MODEL_UNAVAILABLE)
    runtime = make_runtime(pool, storage_dir, {"local": provider})
    await run_generation(runtime, generation_id, attempt=1)  # not raised: nothing to retry
    row = await generation_row(pool, generation_id)
    assert (row["status"], row["error_code"], provider.calls) == (
        "failed",
        "model_unavailable",
        1,
    )
    message = str(row["error_message"])
    assert message.startswith("The provider does not serve this model: 'pillow-v0'")
    assert message.endswith("use 'pillow-v1' instead")


class RecoveringProvider(LocalProvider):
    """Fails transiently `failures` times (a provider outage), then renders for real."""

    def __init__(self, failures: int) -> None:
        super().__init__(delay_ms=0)
        self.failures = failures
        self.calls = 0

    async def generate(self, request: ImageRequest) -> ImageResult:
        self.calls += 1
        if self.calls <= self.failures:
            raise GenerationError(ErrorCode.PROVIDER_ERROR, "503 from the provider")
        return await super().generate(request)


async def test_a_generation_that_gave_up_after_three_transient_attempts_completes_on_retry(
    pool: AsyncConnectionPool, project_id: uuid.UUID, storage_dir: Path
) -> None:
    """Issue 15's reproduction: the retry used to fail at once with `timeout` "Gave up after 3
    attempts" without calling the provider, because `attempts` was never reset."""
    generation_id = await insert_generation(pool, project_id)
    provider = RecoveringProvider(failures=MAX_ATTEMPTS)
    runtime = make_runtime(pool, storage_dir, {"local": provider})
    for attempt in range(1, MAX_ATTEMPTS):
        with pytest.raises(GenerationError):
            await run_generation(runtime, generation_id, attempt=attempt)
    await run_generation(runtime, generation_id, attempt=MAX_ATTEMPTS)
    failed = await generation_row(pool, generation_id)
    assert (failed["status"], failed["attempts"]) == ("failed", MAX_ATTEMPTS)

    retried = await store.retry_generation(
        pool, generation_id, uuid.UUID(str(failed["workspace_id"]))
    )
    assert retried is not None and retried.attempts == 0
    await run_generation(runtime, generation_id, attempt=1)  # the new job's first run
    row = await generation_row(pool, generation_id)
    assert (row["status"], row["attempts"], row["error_code"]) == ("completed", 1, None)
    assert provider.calls == MAX_ATTEMPTS + 1


async def test_a_cancelled_generation_completes_on_retry(
    pool: AsyncConnectionPool, project_id: uuid.UUID, storage_dir: Path
) -> None:
    generation_id = await insert_generation(pool, project_id)
    provider = CancellingProvider(pool, generation_id)
    runtime = make_runtime(pool, storage_dir, {"local": provider})
    await run_generation(runtime, generation_id, attempt=1)
    cancelled = await generation_row(pool, generation_id)
    assert cancelled["status"] == "cancelled"

    retried = await store.retry_generation(
        pool, generation_id, uuid.UUID(str(cancelled["workspace_id"]))
    )
    assert retried is not None and retried.status == "pending"
    runtime = make_runtime(pool, storage_dir, {"local": LocalProvider(delay_ms=0)})
    await run_generation(runtime, generation_id, attempt=1)
    row = await generation_row(pool, generation_id)
    assert (row["status"], row["attempts"]) == ("completed", 1)
    assert row["result_image_url"]


class SlowStorage(LocalStorage):
    async def put(self, key: str, data: bytes, content_type: str) -> str:
        await asyncio.sleep(0.3)
        return await super().put(key, data, content_type)


async def _saving_and_completed_txids(
    pool: AsyncConnectionPool, generation_id: uuid.UUID
) -> tuple[str, str]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT step, txid::text FROM image_events WHERE generation_id = %s"
            " AND step IN ('saving', 'completed') ORDER BY id",
            (generation_id,),
        )
        rows = await cur.fetchall()
    assert [step for step, _ in rows] == ["saving", "completed"]
    return rows[0][1], rows[1][1]


async def test_a_quick_upload_reports_saving_and_completed_in_one_commit(
    pool: AsyncConnectionPool, project_id: uuid.UUID, tmp_path: Path
) -> None:
    generation_id = await insert_generation(pool, project_id, prompt_spec='{"size": "64x64"}')
    runtime = make_runtime(pool, tmp_path, {"local": LocalProvider(delay_ms=0)})
    await run_generation(runtime, generation_id, attempt=1)

    saving, completed = await _saving_and_completed_txids(pool, generation_id)
    assert saving == completed  # one transaction: one commit, both events, in order
    assert (await generation_row(pool, generation_id))["status"] == "completed"


async def test_a_slow_upload_gets_its_saving_event_while_it_runs(
    pool: AsyncConnectionPool, project_id: uuid.UUID, tmp_path: Path
) -> None:
    generation_id = await insert_generation(pool, project_id, prompt_spec='{"size": "64x64"}')
    runtime = make_runtime(pool, tmp_path, {"local": LocalProvider(delay_ms=0)})
    runtime.storage = SlowStorage(tmp_path, "http://files.test")
    await run_generation(runtime, generation_id, attempt=1)

    saving, completed = await _saving_and_completed_txids(pool, generation_id)
    assert saving != completed
    assert (await generation_row(pool, generation_id))["status"] == "completed"
