"""A burst of node changes reaches the workflow stream batched and within a second (the source
documents' "React Flow node updates appear in UI within 1 second"), over real HTTP."""

from __future__ import annotations

import time
import uuid

import httpx
from psycopg_pool import AsyncConnectionPool

from tests.api.test_isolation import close, open_stream, wait_until
from tests.conftest import Tenant
from tests.factories import create_project, insert_generation

NODES = 40


async def test_a_burst_for_many_nodes_arrives_batched_within_a_second(
    api_url: str, pool: AsyncConnectionPool, tenant: Tenant
) -> None:
    workflow = uuid.uuid4()
    project_id = await create_project(pool, tenant.workspace_id, "burst")
    generations = [
        await insert_generation(pool, project_id, workflow_id=workflow, node_id=f"n{i}", job_id=-1)
        for i in range(NODES)
    ]
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as http:
        stream = await open_stream(http, f"/v1/workflows/{workflow}/events", tenant)
        await wait_until(lambda: bool(stream.events), "the first node event")
        first = len(stream.events)

        started = time.monotonic()
        async with pool.connection() as conn:
            # What a worker pool writes when many jobs start at once: one change per node, each
            # its own transaction.
            for generation_id in generations:
                await conn.execute(
                    "UPDATE image_generations SET status = 'processing' WHERE id = %s",
                    (generation_id,),
                )
        written = time.monotonic()

        def running() -> set[str]:
            return {
                node["id"]
                for batch in stream.data("node")[first:]
                for node in batch["nodes"]
                if node["node_data"]["status"] == "running"
            }

        await wait_until(lambda: len(running()) == NODES, "every node running", timeout=10)
        arrived = time.monotonic()
        await close(stream)

    assert arrived - written < 1.0, f"the last change arrived {arrived - written:.2f} s late"
    batches = stream.data("node")[first:]
    assert len(batches) < NODES / 4, f"{len(batches)} events for {NODES} changes: not batched"
    assert written - started < 10
