"""GET /v1/usage: the caller's workspace's use of today's quota window (the UTC day), next to
its limits (sql/018; null is unlimited)."""

from __future__ import annotations

from typing import Any

from litestar import Request, get

from api.auth.keys import Principal
from api.deps import PoolDep
from worker.core.quotas import Usage, workspace_usage


@get(
    "/v1/usage",
    summary="Today's generations and estimated spend against the workspace's quotas",
    description="The window is the UTC day [start, end); quotas reset at `end`. `generations` "
    "counts every generation created in it (retries are not new generations); `estimated_usd` "
    "is the list price of its pending, processing and completed ones (docs/metrics.md). "
    "`limits` are null when unlimited.",
    tags=["usage"],
)
async def usage(request: Request[Principal, Any, Any], pool: PoolDep) -> Usage:
    return await workspace_usage(pool, request.user.workspace_id)
