"""Bulk actions: cancel or retry every generation a filter matches, in one statement each (the
triggers cancel, abort or defer each job as a single cancel or retry would)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from litestar import Controller, Request, post
from litestar.params import JSONBody
from msgspec import Meta
from psycopg_pool import AsyncConnectionPool

from api.auth.keys import Principal
from api.deps import PoolDep
from api.limits import CreationRateLimit, TooManyRequests
from api.problems import InvalidField
from worker.core import store

Verb = Literal["cancel", "retry"]
# What each action may change, and its default when the filter names no status.
STATUSES: dict[Verb, tuple[str, ...]] = {
    "cancel": ("pending", "processing"),
    "retry": ("failed", "cancelled"),
}


class BulkFilter(msgspec.Struct, forbid_unknown_fields=True):
    """Which generations of the caller's workspace: all the given conditions hold."""

    project_id: UUID | None = None
    status: Literal["pending", "processing", "failed", "cancelled"] | None = None
    created_before: Annotated[datetime, Meta(tz=True)] | None = None
    created_after: Annotated[datetime, Meta(tz=True)] | None = None


class BulkResult(msgspec.Struct):
    count: int


async def _bulk(
    verb: Verb, data: BulkFilter, principal: Principal, pool: AsyncConnectionPool
) -> BulkResult:
    if all(getattr(data, field) is None for field in data.__struct_fields__):
        raise InvalidField(
            "body", "give at least one of project_id, status, created_before, created_after"
        )
    allowed = STATUSES[verb]
    if data.status is not None and data.status not in allowed:
        raise InvalidField("status", f"{verb} applies to {' or '.join(allowed)} generations")
    count = await store.bulk_change(
        pool,
        verb,
        principal.workspace_id,
        (data.status,) if data.status else allowed,
        project_id=data.project_id,
        created_before=data.created_before,
        created_after=data.created_after,
    )
    return BulkResult(count=count)


class BulkActions(Controller):
    path = "/v1/generations"
    tags = ["generations"]

    @post(
        "/bulk-cancel",
        summary="Cancel every pending or processing generation a filter matches",
        status_code=200,
    )
    async def bulk_cancel(
        self, data: JSONBody[BulkFilter], request: Request[Principal, Any, Any], pool: PoolDep
    ) -> BulkResult:
        return await _bulk("cancel", data, request.user, pool)

    @post(
        "/bulk-retry",
        summary="Run again every failed or cancelled generation a filter matches",
        description="Each gets a fresh attempt budget, as `POST /v1/generations/{id}/retry`.",
        status_code=200,
        middleware=[CreationRateLimit],
        raises=[TooManyRequests],
    )
    async def bulk_retry(
        self, data: JSONBody[BulkFilter], request: Request[Principal, Any, Any], pool: PoolDep
    ) -> BulkResult:
        return await _bulk("retry", data, request.user, pool)
