"""API keys through the `imagejobs api-key` commands: create, list, revoke; a revoked key is
refused by the API once its cached lookup expires (AUTH_CACHE_TTL_S), and the streams open with
it end within that time."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from litestar import Litestar
from litestar.datastructures import State
from litestar.testing import AsyncTestClient
from psycopg_pool import AsyncConnectionPool

from api.app import create_app
from api.auth.keys import KeyCache, Principal, StreamCredential
from tests.api.test_isolation import close, open_stream, wait_until
from tests.conftest import Tenant
from tests.emulators.server import serve
from worker.core.apikeys import create_api_key, hash_key
from worker.core.config import load_settings
from worker.core.sqlfiles import query

Client = AsyncTestClient[Litestar]


class Run:
    def __init__(self, code: int, stdout: str, stderr: str) -> None:
        self.code, self.stdout, self.stderr = code, stdout, stderr


async def imagejobs(database_url: str, *args: str) -> Run:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker.cli",
        *args,
        env={**os.environ, "DATABASE_URL": database_url, "AUTH_CACHE_TTL_S": "30"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


@asynccontextmanager
async def api(database_url: str, tmp_path: Path, cache_ttl_s: float) -> AsyncIterator[Client]:
    settings = load_settings(
        {
            "DATABASE_URL": database_url,
            "LOCAL_STORAGE_DIR": str(tmp_path / "storage"),
            "AUTH_CACHE_TTL_S": str(cache_ttl_s),
        }
    )
    async with AsyncTestClient(app=create_app(settings)) as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_create_list_revoke_through_the_cli(database_url: str, tmp_path: Path) -> None:
    workspace = uuid.uuid4()
    created = await imagejobs(
        database_url, "api-key", "create", "--workspace", str(workspace), "--name", "ci"
    )
    assert created.code == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("ij_")

    async with api(database_url, tmp_path, cache_ttl_s=0) as client:
        assert (await client.get("/v1/projects", headers=bearer(key))).status_code == 200

        listed = await imagejobs(database_url, "api-key", "list", "--workspace", str(workspace))
        assert listed.code == 0, listed.stderr
        header, row = listed.stdout.strip().splitlines()
        assert header.split()[:3] == ["ID", "PREFIX", "NAME"]
        key_id, prefix, name, *_ = row.split()
        assert (prefix, name) == (key[:10], "ci")
        assert key not in listed.stdout and row.endswith("-")  # not revoked, never the key

        revoked = await imagejobs(database_url, "api-key", "revoke", prefix)
        assert revoked.code == 0, revoked.stderr
        assert f"revoked API key {key_id}" in revoked.stdout and "30 s" in revoked.stdout

        refused = await client.get("/v1/projects", headers=bearer(key))
        assert refused.status_code == 401
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert "revoked" in refused.json()["detail"]

    listed = await imagejobs(database_url, "api-key", "list", "--workspace", str(workspace))
    assert not listed.stdout.strip().splitlines()[1].endswith("-")  # a revocation time
    again = await imagejobs(database_url, "api-key", "revoke", key_id)
    assert again.code == 0 and "already revoked" in again.stdout


async def test_revocation_takes_effect_within_the_cache_ttl(
    database_url: str, tmp_path: Path, pool: AsyncConnectionPool
) -> None:
    async with pool.connection() as conn:
        key = await create_api_key(conn, uuid.uuid4(), "short-lived")
    async with (
        api(database_url, tmp_path, cache_ttl_s=1) as short,
        api(database_url, tmp_path, cache_ttl_s=60) as long,
    ):
        for client in (short, long):
            assert (await client.get("/v1/projects", headers=bearer(key))).status_code == 200
        # Revoked by the key itself, as one would after a leak.
        revoked = await imagejobs(database_url, "api-key", "revoke", key)
        assert revoked.code == 0, revoked.stderr
        # A lookup cached before the revocation lasts until its TTL is over, not longer.
        assert (await long.get("/v1/projects", headers=bearer(key))).status_code == 200
        await asyncio.sleep(1.1)
        assert (await short.get("/v1/projects", headers=bearer(key))).status_code == 401


async def test_revocation_ends_the_streams_open_with_the_key(
    database_url: str, tmp_path: Path, pool: AsyncConnectionPool
) -> None:
    """Every kind of stream re-checks its key at least every AUTH_CACHE_TTL_S, on its own clock
    (keep-alives are far apart here), and ends with an `unauthorized` event once it is revoked."""
    workspace_id = uuid.uuid4()
    async with pool.connection() as conn:
        tenant = Tenant(workspace_id, await create_api_key(conn, workspace_id, "streaming"))
    settings = load_settings(
        {
            "DATABASE_URL": database_url,
            "LOCAL_STORAGE_DIR": str(tmp_path / "storage"),
            "AUTH_CACHE_TTL_S": "1",
            "SSE_KEEPALIVE_S": "60",
        }
    )
    workflow_id = str(uuid.uuid4())
    with serve(create_app(settings), lifespan="on") as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            project = await http.post("/v1/projects", json={"name": "p"}, headers=tenant.headers)
            assert project.status_code == 201, project.text
            project_id = project.json()["id"]
            generation = await http.post(
                "/v1/generations",
                json={"project_id": project_id, "prompt": "x", "workflow_id": workflow_id},
                headers=tenant.headers,
            )
            assert generation.status_code == 201, generation.text
            paths = [
                f"/v1/generations/{generation.json()['id']}/events",
                f"/v1/projects/{project_id}/events",
                f"/v1/workflows/{workflow_id}/events",
                "/v1/projects/events",
            ]
            streams = [await open_stream(http, path, tenant) for path in paths]
            await wait_until(lambda: all(s.events for s in streams), "the first events")
            await asyncio.sleep(1.5)  # checked at least once: still valid, still open
            assert not any(s.ended for s in streams)

            revoked = await imagejobs(database_url, "api-key", "revoke", tenant.api_key)
            assert revoked.code == 0, revoked.stderr
            revoked_at = time.monotonic()
            await wait_until(lambda: all(s.ended for s in streams), "the ends", timeout=5)
            assert time.monotonic() - revoked_at < 1 + 2  # the TTL, and slack for a busy machine
            for path, stream in zip(paths, streams, strict=True):
                final = stream.events[-1]
                assert final.event == "unauthorized", (path, stream.raw)
                assert final.json()["code"] == "credential_revoked"
                assert final.retry is None
            await close(*streams)
            # EventSource reconnects: and is refused.
            again = await http.get(paths[0], headers=tenant.headers)
            assert again.status_code == 401


async def test_a_credential_that_cannot_be_checked_keeps_its_stream(
    database_url: str, pool: AsyncConnectionPool
) -> None:
    """Streams outlive database outages: a re-check that cannot reach the database is no
    revocation (the next one tries again)."""
    async with pool.connection() as conn:
        key = await create_api_key(conn, uuid.uuid4(), "outage")
    settings = load_settings({"DATABASE_URL": database_url, "AUTH_CACHE_TTL_S": "1"})
    async with AsyncConnectionPool(
        "postgresql://postgres@127.0.0.1:1/none", open=False, timeout=0.5
    ) as away:
        state = State({"pool": away, "key_cache": KeyCache(), "settings": settings})
        principal = Principal(workspace_id=uuid.uuid4(), key_id=uuid.uuid4())
        assert await StreamCredential(state, key, principal).check() is None
        state.pool = pool
        assert await StreamCredential(state, key, principal).check() is None
        await imagejobs(database_url, "api-key", "revoke", key)
        ended = await StreamCredential(state, key, principal).check()
        assert ended is not None and ended.code == "credential_revoked"


async def test_revoke_refuses_an_ambiguous_or_unknown_reference(
    database_url: str, pool: AsyncConnectionPool
) -> None:
    workspace = uuid.uuid4()
    prefix = "ij_" + uuid.uuid4().hex[:7]
    async with pool.connection() as conn:
        for n in range(2):
            await conn.execute(
                query("insert_api_key"),
                {
                    "workspace_id": workspace,
                    "name": f"twin {n}",
                    "prefix": prefix,
                    "key_hash": hash_key(f"{prefix}-{n}"),
                },
            )
    ambiguous = await imagejobs(database_url, "api-key", "revoke", prefix)
    assert ambiguous.code == 1 and "give the id" in ambiguous.stderr
    unknown = await imagejobs(database_url, "api-key", "revoke", str(uuid.uuid4()))
    assert unknown.code == 1 and "no API key" in unknown.stderr
    never_issued = "ij_" + "x" * 43
    unknown = await imagejobs(database_url, "api-key", "revoke", never_issued)
    assert unknown.code == 1 and never_issued not in unknown.stderr + unknown.stdout
    # A prefix of the prefix names nothing (no pattern matching: "ij_" must not revoke all).
    partial = await imagejobs(database_url, "api-key", "revoke", "ij_")
    assert partial.code == 1
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM api_keys WHERE workspace_id = %s AND revoked_at IS NULL",
            (workspace,),
        )
        assert await cur.fetchone() == (2,)


async def test_list_of_an_empty_workspace(database_url: str) -> None:
    listed = await imagejobs(database_url, "api-key", "list", "--workspace", str(uuid.uuid4()))
    assert listed.code == 0 and "has no API keys" in listed.stdout
