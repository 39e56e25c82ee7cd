"""POST /v1/webhooks/{provider}: verify first, record once, defer the work."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from litestar import Litestar
from litestar.testing import AsyncTestClient
from psycopg_pool import AsyncConnectionPool
from standardwebhooks import Webhook

from api.auth.webhooks import JWKS_TTL_S, FalVerifier, SignatureError
from tests.api.conftest import WEBHOOK_SECRET, Jwks
from tests.conftest import Tenant
from tests.factories import create_project, insert_generation

Client = AsyncTestClient[Litestar]


def signed(
    body: bytes,
    *,
    secret: str = WEBHOOK_SECRET,
    msg_id: str | None = None,
    at: datetime | None = None,
) -> dict[str, str]:
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    at = at or datetime.now(UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, at, body.decode()),
        "content-type": "application/json",
    }


def generic_payload(job_id: str, status: str = "completed", **extra: Any) -> bytes:
    data = {
        "job_id": job_id,
        "status": status,
        "images": [{"url": "https://cdn.example.com/r.png"}],
        **extra,
    }
    return json.dumps({"type": "image.generation.status", "data": data}).encode()


async def processing_generation(
    pool: AsyncConnectionPool, tenant: Tenant, provider: str = "fal"
) -> tuple[str, str]:
    """A generation waiting on a provider job, as the worker leaves it after submitting."""
    job_id = f"req-{uuid.uuid4()}"
    project_id = await create_project(pool, tenant.workspace_id, "hooks")
    generation_id = await insert_generation(pool, project_id, provider=provider, job_id=-1)
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE image_generations SET status = 'processing', provider_job_id = %s WHERE id = %s",
            (job_id, generation_id),
        )
    return str(generation_id), job_id


async def counts(pool: AsyncConnectionPool, generation_id: str) -> tuple[int, int, int]:
    """(deliveries, webhook events, deferred result jobs) recorded for a generation."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT (SELECT count(*) FROM webhook_deliveries WHERE generation_id = %(id)s),"
            " (SELECT count(*) FROM image_events WHERE generation_id = %(id)s AND kind = 'webhook'),"
            " (SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'finish_from_webhook'"
            "   AND args->>'generation_id' = %(id)s::text)",
            {"id": generation_id},
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


async def test_a_signed_generic_callback_is_recorded_and_deferred(
    client: Client, tenant: Tenant, pool: AsyncConnectionPool
) -> None:
    generation_id, job_id = await processing_generation(pool, tenant)
    body = generic_payload(job_id)
    response = await client.post("/v1/webhooks/generic", content=body, headers=signed(body))
    assert response.status_code == 202
    assert response.json() == {"status": "accepted"}
    assert await counts(pool, generation_id) == (1, 1, 1)


@pytest.mark.parametrize(
    "tamper",
    [
        "wrong secret",
        "altered body",
        "stale",
        "future",
        "no id",
        "no timestamp",
        "no signature",
        "garbage signature",
    ],
)
async def test_bad_signatures_are_401_and_change_nothing(
    client: Client, tenant: Tenant, pool: AsyncConnectionPool, tamper: str
) -> None:
    generation_id, job_id = await processing_generation(pool, tenant)
    body = generic_payload(job_id)
    headers = signed(body)
    if tamper == "wrong secret":
        headers = signed(body, secret="whsec_" + "QUJD" * 8)
    elif tamper == "altered body":
        body = body.replace(b"completed", b"failed")
    elif tamper == "stale":
        headers = signed(body, at=datetime.now(UTC) - timedelta(minutes=6))
    elif tamper == "future":
        headers = signed(body, at=datetime.now(UTC) + timedelta(minutes=6))
    elif tamper == "garbage signature":
        headers["webhook-signature"] = "v1,???"
    else:
        del headers[
            {
                "no id": "webhook-id",
                "no timestamp": "webhook-timestamp",
                "no signature": "webhook-signature",
            }[tamper]
        ]
    response = await client.post("/v1/webhooks/generic", content=body, headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    assert await counts(pool, generation_id) == (0, 0, 0)


async def test_the_same_delivery_twice_is_processed_once(
    client: Client, tenant: Tenant, pool: AsyncConnectionPool
) -> None:
    generation_id, job_id = await processing_generation(pool, tenant)
    body = generic_payload(job_id)
    headers = signed(body)
    first = await client.post("/v1/webhooks/generic", content=body, headers=headers)
    second = await client.post("/v1/webhooks/generic", content=body, headers=headers)
    assert (first.status_code, second.status_code) == (202, 200)
    assert second.json() == {"status": "duplicate"}
    assert await counts(pool, generation_id) == (1, 1, 1)


async def test_concurrent_copies_of_a_delivery_are_processed_once(
    client: Client, tenant: Tenant, pool: AsyncConnectionPool
) -> None:
    generation_id, job_id = await processing_generation(pool, tenant)
    body = generic_payload(job_id)
    headers = signed(body)
    responses = await asyncio.gather(
        *(client.post("/v1/webhooks/generic", content=body, headers=headers) for _ in range(8))
    )
    assert sorted(r.status_code for r in responses) == [200] * 7 + [202]
    assert await counts(pool, generation_id) == (1, 1, 1)


async def test_callbacks_for_unknown_or_finished_jobs_are_acknowledged(
    client: Client, tenant: Tenant, pool: AsyncConnectionPool
) -> None:
    body = generic_payload("nobody-knows-this-job")
    unknown = await client.post("/v1/webhooks/generic", content=body, headers=signed(body))
    assert (unknown.status_code, unknown.json()) == (200, {"status": "unknown_job"})

    generation_id, job_id = await processing_generation(pool, tenant)
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE image_generations SET status = 'cancelled' WHERE id = %s", (generation_id,)
        )
    body = generic_payload(job_id)
    finished = await client.post("/v1/webhooks/generic", content=body, headers=signed(body))
    assert (finished.status_code, finished.json()) == (200, {"status": "ignored"})
    assert (await counts(pool, generation_id))[2] == 0


async def test_unreadable_payloads_and_unknown_providers(client: Client) -> None:
    body = b'{"type": "something else"}'
    response = await client.post("/v1/webhooks/generic", content=body, headers=signed(body))
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["data"]
    unknown = await client.post("/v1/webhooks/replicate", content=b"{}")
    assert unknown.status_code == 404


def fal_headers(
    key: Ed25519PrivateKey, body: bytes, *, request_id: str, at: float | None = None
) -> dict[str, str]:
    timestamp = str(int(at if at is not None else time.time()))
    message = "\n".join(
        [request_id, "user-1", timestamp, hashlib.sha256(body).hexdigest()]
    ).encode()
    return {
        "x-fal-webhook-request-id": request_id,
        "x-fal-webhook-user-id": "user-1",
        "x-fal-webhook-timestamp": timestamp,
        "x-fal-webhook-signature": key.sign(message).hex(),
        "content-type": "application/json",
    }


def fal_payload(request_id: str) -> bytes:
    return json.dumps(
        {
            "request_id": request_id,
            "gateway_request_id": request_id,
            "status": "OK",
            "payload": {
                "images": [{"url": "https://fal.media/files/x.png", "width": 64, "height": 64}],
                "seed": 1,
            },
        }
    ).encode()


async def test_fal_signatures_are_verified_against_its_jwks(
    client: Client, tenant: Tenant, pool: AsyncConnectionPool, jwks: Jwks
) -> None:
    generation_id, job_id = await processing_generation(pool, tenant)
    body = fal_payload(job_id)
    forged = await client.post(
        "/v1/webhooks/fal",
        content=body,
        headers=fal_headers(Ed25519PrivateKey.generate(), body, request_id=job_id),
    )
    assert forged.status_code == 401
    stale = await client.post(
        "/v1/webhooks/fal",
        content=body,
        headers=fal_headers(jwks.keys[0], body, request_id=job_id, at=time.time() - 600),
    )
    assert stale.status_code == 401
    assert await counts(pool, generation_id) == (0, 0, 0)

    good = await client.post(
        "/v1/webhooks/fal", content=body, headers=fal_headers(jwks.keys[0], body, request_id=job_id)
    )
    assert good.status_code == 202
    assert await counts(pool, generation_id) == (1, 1, 1)


async def test_fal_keys_are_refetched_when_they_rotate(
    client: Client, tenant: Tenant, pool: AsyncConnectionPool, jwks: Jwks
) -> None:
    _generation_id, job_id = await processing_generation(pool, tenant)
    body = fal_payload(job_id)
    first = await client.post(
        "/v1/webhooks/fal",
        content=body,
        headers=fal_headers(jwks.keys[0], body, request_id=f"warm-{job_id}"),
    )
    assert first.status_code in (200, 202)
    jwks.keys.append(Ed25519PrivateKey.generate())
    fetches = jwks.fetches
    rotated = await client.post(
        "/v1/webhooks/fal",
        content=body,
        headers=fal_headers(jwks.keys[-1], body, request_id=job_id),
    )
    assert rotated.status_code == 202
    assert jwks.fetches == fetches + 1


async def warm_verifier(jwks: Jwks) -> tuple[FalVerifier, bytes, dict[str, str]]:
    """A verifier that has fetched fal's keys once, and a callback its cached key verifies."""
    verifier = FalVerifier(jwks.url)
    body = fal_payload("req-good")
    good = fal_headers(jwks.keys[0], body, request_id="req-good")
    assert await verifier.verify(body, good) == "req-good"
    return verifier, body, good


async def test_forged_fal_signatures_refresh_the_jwks_at_most_once_per_cooldown(
    jwks: Jwks,
) -> None:
    verifier, body, _ = await warm_verifier(jwks)
    fetches = jwks.fetches
    forged = [
        fal_headers(Ed25519PrivateKey.generate(), body, request_id="req-good") for _ in range(200)
    ]
    results = await asyncio.gather(
        *(verifier.verify(body, headers) for headers in forged), return_exceptions=True
    )
    assert all(isinstance(r, SignatureError) for r in results)
    assert jwks.fetches == fetches + 1
    for headers in forged[:50]:  # later ones, still within the cooldown: no fetch at all
        with pytest.raises(SignatureError):
            await verifier.verify(body, headers)
    assert jwks.fetches == fetches + 1


async def test_known_keys_verify_while_a_jwks_fetch_hangs(jwks: Jwks) -> None:
    verifier, body, good = await warm_verifier(jwks)
    jwks.delay = 3.0
    try:
        forged = fal_headers(Ed25519PrivateKey.generate(), body, request_id="req-good")
        refresh = asyncio.create_task(verifier.verify(body, forged))
        await asyncio.sleep(0.2)  # the forgery's refresh is now waiting on the slow endpoint
        started = time.monotonic()
        for _ in range(20):
            assert await verifier.verify(body, good) == "req-good"
        assert time.monotonic() - started < 0.5
        with pytest.raises(SignatureError):
            await refresh
    finally:
        jwks.delay = 0.0


async def test_expired_keys_are_refreshed_behind_verified_callbacks(jwks: Jwks) -> None:
    verifier, body, good = await warm_verifier(jwks)
    fetches = jwks.fetches
    jwks.delay = 3.0
    verifier.jwks.clock = lambda: time.monotonic() + JWKS_TTL_S + 1  # past the TTL
    try:
        started = time.monotonic()
        assert await verifier.verify(body, good) == "req-good"
        assert time.monotonic() - started < 0.5
        await verifier.jwks.idle()
        assert jwks.fetches == fetches + 1
    finally:
        jwks.delay = 0.0
