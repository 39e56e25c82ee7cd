"""GET /metrics: Prometheus text that parses, and series that move as generations run."""

from __future__ import annotations

import uuid
from pathlib import Path

from litestar import Litestar
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families
from psycopg_pool import AsyncConnectionPool

from api.app import create_app
from tests.conftest import Tenant
from tests.sql.helpers import update_generation, walk_to
from worker.core.config import load_settings

Client = AsyncTestClient[Litestar]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(client: Client) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


async def create_generation(client: Client, tenant: Tenant, model: str) -> uuid.UUID:
    project = await client.post("/v1/projects", json={"name": "m"}, headers=tenant.headers)
    response = await client.post(
        "/v1/generations",
        json={"project_id": project.json()["id"], "prompt": "a lighthouse", "model": model},
        headers=tenant.headers,
    )
    assert response.status_code == 201
    return uuid.UUID(response.json()["id"])


async def test_series_move_when_generations_run(
    client: Client, tenant: Tenant, pool: AsyncConnectionPool
) -> None:
    model = f"metrics-{uuid.uuid4().hex[:8]}"
    before = await scrape(client)
    done = await create_generation(client, tenant, model)
    failed = await create_generation(client, tenant, model)

    queued = await scrape(client)
    assert total(queued, "imagejobs_generations", status="pending", model=model) == 2
    assert total(queued, "imagejobs_queue_depth") >= total(before, "imagejobs_queue_depth") + 2
    assert total(queued, "imagejobs_queue_oldest_job_age_seconds") >= 0

    async with pool.connection() as conn:
        await walk_to(conn, done, "completed")
        await walk_to(conn, failed, "processing")
        await update_generation(conn, failed, status="failed", error_code="storage_error")
        await conn.execute(
            "INSERT INTO outgoing_webhook_attempts"
            " (generation_id, event_id, message_id, type, attempt, status_code)"
            " VALUES (%s, 1, 'msg_a', 'generation.completed', 1, 200),"
            "        (%s, 2, 'msg_b', 'generation.failed', 1, NULL)",
            (done, failed),
        )

    after = await scrape(client)
    assert total(after, "imagejobs_generations", status="completed", model=model) == 1
    assert total(after, "imagejobs_generations", status="failed", model=model) == 1
    assert total(after, "imagejobs_generations", status="pending", model=model) == 0
    for outcome in ("delivered", "unreachable"):
        grew = total(after, "imagejobs_webhook_deliveries_window", outcome=outcome)
        assert grew == total(before, "imagejobs_webhook_deliveries_window", outcome=outcome) + 1
    upload_failures = {"error_code": "storage_error"}
    assert total(after, "imagejobs_generation_failures_window", **upload_failures) == (
        total(before, "imagejobs_generation_failures_window", **upload_failures) + 1
    )
    finished = "imagejobs_generation_duration_seconds_gcount"
    assert total(after, finished) == total(before, finished) + 2
    # The completed one walked through processing: its step durations are counted.
    steps = "imagejobs_step_duration_seconds_gcount"
    assert total(after, steps) > total(before, steps)
    inf = total(after, "imagejobs_generation_duration_seconds_bucket", le="+Inf")
    assert inf == total(after, finished)


async def test_sse_subscriber_gauge_follows_open_streams(client: Client) -> None:
    hub = client.app.state.hub
    assert total(await scrape(client), "imagejobs_sse_subscribers") == hub.subscriber_count
    base = hub.subscriber_count
    subscription = hub.subscribe(f"project:{uuid.uuid4()}")
    assert total(await scrape(client), "imagejobs_sse_subscribers") == base + 1
    subscription.close()
    assert total(await scrape(client), "imagejobs_sse_subscribers") == base


async def test_metrics_token_guards_the_endpoint(database_url: str, tmp_path: Path) -> None:
    settings = load_settings(
        {
            "DATABASE_URL": database_url,
            "LOCAL_STORAGE_DIR": str(tmp_path),
            "METRICS_TOKEN": "s3cret",
        }
    )
    async with AsyncTestClient(app=create_app(settings)) as guarded:
        assert (await guarded.get("/metrics")).status_code == 401
        wrong = await guarded.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        ok = await guarded.get("/metrics", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert list(text_string_to_metric_families(ok.text))
