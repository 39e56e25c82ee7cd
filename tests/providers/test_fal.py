"""fal's queue API through our adapter and the pipeline's submit → poll → finish path."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from tests.emulators.fal import FalState
from tests.emulators.recorder import Scripted
from tests.factories import insert_generation
from tests.worker.conftest import event_trail, generation_row
from worker.core.config import load_settings
from worker.core.errors import ErrorCode, GenerationError
from worker.core.webhook_payloads import parse_fal_result
from worker.providers.base import build_request
from worker.providers.fal import FalProvider, app_id
from worker.queue import pipeline
from worker.queue.runtime import Runtime
from worker.storage.local import LocalStorage


def provider(state: FalState, key: str | None = None) -> FalProvider:
    return FalProvider(key or state.key, state.base_url)


def runtime(pool: AsyncConnectionPool, state: FalState, tmp_path: Path, **env: str) -> Runtime:
    settings = load_settings({"POLL_INTERVAL_S": "0.01", "POLL_TIMEOUT_S": "60", **env})
    return Runtime(
        settings,
        pool,
        {},
        LocalStorage(tmp_path, "http://files.test"),
        queue_providers={"fal": provider(state)},
    )


async def scheduled_job(
    pool: AsyncConnectionPool, generation_id: uuid.UUID
) -> tuple[str, dict[str, Any], float]:
    """The job the generation was handed to: task, args, and seconds until it may start."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT j.task_name, j.args, extract(epoch FROM j.scheduled_at - now()) "
            "FROM image_generations g JOIN procrastinate_jobs j ON j.id = g.job_id WHERE g.id = %s",
            (generation_id,),
        )
        row = await cur.fetchone()
    assert row is not None
    return str(row[0]), dict(row[1]), float(row[2] or 0)


async def drive(
    rt: Runtime, pool: AsyncConnectionPool, generation_id: uuid.UUID, max_polls: int = 20
) -> None:
    """Plays the worker: runs each poll job the pipeline schedules until none is left."""
    for _ in range(max_polls):
        row = await generation_row(pool, generation_id)
        if row["status"] != "processing":
            return
        task, args, _ = await scheduled_job(pool, generation_id)
        assert task == pipeline.POLL_TASK
        await pipeline.poll_generation(rt, generation_id, args["submitted_at"], args["seen_logs"])
    raise AssertionError("the generation never left processing")


def test_app_id_drops_the_sub_path() -> None:
    assert app_id("fal-ai/flux/dev") == "fal-ai/flux"
    assert app_id("fal-ai/fast-sdxl") == "fal-ai/fast-sdxl"


async def test_submit_sends_the_model_input_and_the_webhook(fal: FalState) -> None:
    request = build_request(
        "a fox",
        "fal-ai/flux/dev",
        {"size": "768x512", "seed": 9, "negative_prompt": "blur", "quality": "hd"},
        default_side=1024,
        source=None,
    )
    job_id = await provider(fal).submit(request, "https://api.example.com/v1/webhooks/fal")
    sent = fal.recorder.requests[-1]
    assert sent.path == "/fal-ai/flux/dev"
    assert sent.headers["authorization"] == f"Key {fal.key}"
    assert sent.query["fal_webhook"] == "https://api.example.com/v1/webhooks/fal"
    assert sent.json == {
        "prompt": "a fox",
        "image_size": {"width": 768, "height": 512},
        "num_images": 1,
        "enable_safety_checker": True,
        "output_format": "png",
        "seed": 9,
        "negative_prompt": "blur",
    }
    assert fal.jobs[job_id].webhook == "https://api.example.com/v1/webhooks/fal"
    assert provider(fal).arguments(request)[1] == ["quality"]


async def test_status_walks_queue_progress_completion(fal: FalState) -> None:
    request = build_request("x", "fal-ai/flux/dev", {}, default_side=64, source=None)
    p = provider(fal)
    job_id = await p.submit(request, None)
    states = [await p.status("fal-ai/flux/dev", job_id) for _ in range(3)]
    assert [s.state for s in states] == ["queued", "running", "completed"]
    assert states[0].queue_position == 2
    assert states[1].logs == ["step 1 of 3", "step 2 of 3"]
    assert fal.recorder.requests[-1].path == f"/fal-ai/flux/requests/{job_id}/status"
    urls = await p.result_urls("fal-ai/flux/dev", job_id)
    assert urls == [f"{fal.base_url}/files/{job_id}.png"]


# fal's content refusal, as its error reference shows it (HTTP 422, branch on `type`).
CONTENT_REFUSAL = {
    "detail": [
        {
            "loc": ["body", "prompt"],
            "msg": "The content was flagged by a content checker.",
            "type": "content_policy_violation",
            "url": "https://docs.fal.ai/errors#content_policy_violation",
            "input": "x",
            "categories": ["sexual"],
        }
    ]
}
INVALID_INPUT = {
    "detail": [
        {"loc": ["body", "num_images"], "msg": "must be at most 4", "type": "less_than_equal"}
    ]
}


@pytest.mark.parametrize(
    ("status", "body", "headers", "code", "retryable", "retry_after"),
    [
        (429, {"detail": "nope"}, {"Retry-After": "7"}, ErrorCode.PROVIDER_ERROR, True, 7.0),
        (503, {"detail": "nope"}, {}, ErrorCode.PROVIDER_ERROR, True, None),
        (401, {"detail": "nope"}, {}, ErrorCode.PROVIDER_ERROR, False, None),
        (403, {"detail": "nope"}, {}, ErrorCode.PROVIDER_ERROR, False, None),
        (404, {"detail": "Application not found"}, {}, ErrorCode.MODEL_UNAVAILABLE, False, None),
        (422, INVALID_INPUT, {}, ErrorCode.NO_RESULT, False, None),
        (422, CONTENT_REFUSAL, {}, ErrorCode.CONTENT_POLICY, False, None),
    ],
    ids=["429", "503", "401", "403", "404_model", "422_invalid", "422_content_policy"],
)
async def test_submit_errors_map_to_the_catalogue(
    fal: FalState,
    status: int,
    body: dict[str, Any],
    headers: dict[str, str],
    code: ErrorCode,
    retryable: bool,
    retry_after: float | None,
) -> None:
    fal.recorder.script(Scripted(status, body, headers))
    with pytest.raises(GenerationError) as caught:
        await provider(fal).submit(
            build_request("x", "fal-ai/flux/dev", {}, default_side=64, source=None), None
        )
    assert (caught.value.code, caught.value.retryable, caught.value.retry_after) == (
        code,
        retryable,
        retry_after,
    )
    assert len([r for r in fal.recorder.requests if r.method == "POST"]) == 1
    if code is ErrorCode.MODEL_UNAVAILABLE:
        assert "fal-ai/flux/dev" in caught.value.message


async def test_an_unknown_request_id_is_not_a_missing_model(fal: FalState) -> None:
    with pytest.raises(GenerationError) as caught:
        await provider(fal).status("fal-ai/flux/dev", "no-such-request")
    assert caught.value.code is ErrorCode.NO_RESULT and not caught.value.retryable


async def test_a_wrong_key_never_leaks(fal: FalState) -> None:
    with pytest.raises(GenerationError) as caught:
        await provider(fal, key="wrong-secret").submit(
            build_request("x", "fal-ai/flux/dev", {}, default_side=64, source=None), None
        )
    assert "wrong-secret" not in caught.value.message
    assert "FAL_KEY" in caught.value.message
    assert not caught.value.retryable, "a key does not fix itself: 401 is permanent"


def test_parse_result_errors() -> None:
    with pytest.raises(GenerationError) as no_image:
        parse_fal_result({"images": []})
    assert no_image.value.code is ErrorCode.NO_RESULT
    with pytest.raises(GenerationError) as flagged:
        parse_fal_result({"images": [], "has_nsfw_concepts": [True]})
    assert flagged.value.code is ErrorCode.CONTENT_POLICY
    assert parse_fal_result({"image": {"url": "https://x/y.png"}}) == ["https://x/y.png"]


async def test_without_a_webhook_the_generation_is_polled_to_completion(
    fal: FalState, pool: AsyncConnectionPool, project_id: uuid.UUID, tmp_path: Path
) -> None:
    rt = runtime(pool, fal, tmp_path)
    generation_id = await insert_generation(
        pool, project_id, provider="fal", prompt_spec='{"size": "96x64"}'
    )
    await pipeline.run_generation(rt, generation_id, attempt=1)

    row = await generation_row(pool, generation_id)
    assert row["status"] == "processing"
    assert row["provider_job_id"] in fal.jobs
    assert fal.jobs[str(row["provider_job_id"])].webhook is None
    task, args, _delay = await scheduled_job(pool, generation_id)
    assert task == pipeline.POLL_TASK
    assert args["generation_id"] == str(generation_id)

    await drive(rt, pool, generation_id)
    row = await generation_row(pool, generation_id)
    assert (row["status"], row["progress"]) == ("completed", 100)
    assert str(row["result_image_url"]).endswith(".png")
    # A result finished by polling gets its thumbnail like any other (96x64 is not enlarged).
    assert row["thumbnail_url"] == str(row["result_image_url"]).replace(".png", "-thumb.webp")
    metadata = row["metadata"]
    assert isinstance(metadata, dict)
    assert (metadata["width"], metadata["height"]) == (96, 64)

    trail = await event_trail(pool, generation_id)
    processing = [progress for kind, _, step, progress in trail if step == "processing"]
    assert processing and all(50 <= p <= 79 for p in processing)
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT message FROM image_events WHERE generation_id = %s AND kind = 'log' ORDER BY id",
            (generation_id,),
        )
        logs = [str(r[0]) for r in await cur.fetchall()]
    assert "Waiting in the provider's queue (position 2)" in logs
    assert "step 3 of 3" in logs


async def test_a_job_that_never_finishes_times_out(
    fal: FalState, pool: AsyncConnectionPool, project_id: uuid.UUID, tmp_path: Path
) -> None:
    fal.next_behaviour.append("never")
    rt = runtime(pool, fal, tmp_path, POLL_TIMEOUT_S="0.3")
    generation_id = await insert_generation(pool, project_id, provider="fal")
    await pipeline.run_generation(rt, generation_id, attempt=1)
    row = await generation_row(pool, generation_id)
    job = fal.jobs[str(row["provider_job_id"])]

    import asyncio

    for _ in range(50):
        _task, args, _ = await scheduled_job(pool, generation_id)
        await pipeline.poll_generation(rt, generation_id, args["submitted_at"], args["seen_logs"])
        if (await generation_row(pool, generation_id))["status"] != "processing":
            break
        await asyncio.sleep(0.02)
    row = await generation_row(pool, generation_id)
    assert (row["status"], row["error_code"]) == ("failed", "timeout")
    assert row["error_message"] == "Polling timeout exceeded"
    assert job.cancelled, "the provider's job is cancelled when we give up on it"


async def test_a_failed_provider_job_fails_the_generation(
    fal: FalState, pool: AsyncConnectionPool, project_id: uuid.UUID, tmp_path: Path
) -> None:
    fal.next_behaviour.append("fail")
    rt = runtime(pool, fal, tmp_path)
    generation_id = await insert_generation(pool, project_id, provider="fal")
    await pipeline.run_generation(rt, generation_id, attempt=1)
    await drive(rt, pool, generation_id)
    row = await generation_row(pool, generation_id)
    assert (row["status"], row["error_code"]) == ("failed", "provider_error")
    assert "Model crashed" in str(row["error_message"])


async def test_with_a_webhook_expected_polling_is_a_slower_safety_net(
    fal: FalState, pool: AsyncConnectionPool, project_id: uuid.UUID, tmp_path: Path
) -> None:
    rt = runtime(
        pool, fal, tmp_path, PUBLIC_BASE_URL="https://api.example.com", POLL_INTERVAL_S="10"
    )
    generation_id = await insert_generation(pool, project_id, provider="fal")
    await pipeline.run_generation(rt, generation_id, attempt=1)
    row = await generation_row(pool, generation_id)
    assert (
        fal.jobs[str(row["provider_job_id"])].webhook == "https://api.example.com/v1/webhooks/fal"
    )
    _, _, delay = await scheduled_job(pool, generation_id)
    assert 30 < delay <= 40, "the safety-net poll runs at 4x the interval"
    # The webhook never comes: the safety net alone still completes the generation.
    await drive(rt, pool, generation_id)
    assert (await generation_row(pool, generation_id))["status"] == "completed"


async def test_a_cancelled_generation_stops_polling(
    fal: FalState, pool: AsyncConnectionPool, project_id: uuid.UUID, tmp_path: Path
) -> None:
    rt = runtime(pool, fal, tmp_path)
    generation_id = await insert_generation(pool, project_id, provider="fal")
    await pipeline.run_generation(rt, generation_id, attempt=1)
    _, args, _ = await scheduled_job(pool, generation_id)
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE image_generations SET status = 'cancelled' WHERE id = %s", (generation_id,)
        )
        cur = await conn.execute(
            "SELECT j.status FROM image_generations g JOIN procrastinate_jobs j ON j.id = g.job_id WHERE g.id = %s",
            (generation_id,),
        )
        job_status = await cur.fetchone()
    assert job_status is not None and job_status[0] == "cancelled"
    polls = len(fal.recorder.requests)
    await pipeline.poll_generation(rt, generation_id, args["submitted_at"], args["seen_logs"])
    assert len(fal.recorder.requests) == polls
