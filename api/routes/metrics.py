"""GET /metrics: Prometheus text format, open like /healthz unless METRICS_TOKEN is set."""

from __future__ import annotations

import hmac

from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.exceptions import NotAuthorizedException
from prometheus_client import CONTENT_TYPE_LATEST

from api.deps import HubDep, PoolDep, SettingsDep
from api.metrics import db_families, render


@get("/metrics", summary="Prometheus metrics", tags=["health"], include_in_schema=False)
async def metrics(
    request: Request[object, object, State], pool: PoolDep, hub: HubDep, settings: SettingsDep
) -> Response[bytes]:
    if settings.metrics_token is not None:
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {settings.metrics_token}".encode()):
            raise NotAuthorizedException(detail="a valid METRICS_TOKEN bearer is required")
    families = await db_families(pool, settings.metrics_window_s)
    body = render(families, hub.subscriber_count)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
