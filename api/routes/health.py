"""Liveness and readiness."""

from __future__ import annotations

import asyncio

from litestar import get
from litestar.exceptions import HTTPException
from litestar.status_codes import HTTP_503_SERVICE_UNAVAILABLE

from api.deps import HubDep, PoolDep
from worker.core import store


@get("/healthz", summary="Liveness: the process answers", tags=["health"])
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz", summary="Readiness: the database answers and the hub is listening", tags=["health"])
async def readyz(pool: PoolDep, hub: HubDep) -> dict[str, str]:
    try:
        async with asyncio.timeout(2):
            await store.ping(pool)
    except Exception as exc:
        raise HTTPException(
            status_code=HTTP_503_SERVICE_UNAVAILABLE,
            detail=f"database unavailable ({type(exc).__name__})",
        ) from exc
    return {
        "status": "ready",
        "hub": "listening" if hub.connected.is_set() else "reconnecting",
    }
