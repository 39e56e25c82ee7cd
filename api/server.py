"""`imagejobs api`: uvicorn serving the app on 0.0.0.0:$PORT."""

from __future__ import annotations

import uvicorn

from api.app import create_app
from worker.config import Settings

# Below Render's default 30 s shutdown delay, so open SSE streams never hold a deploy.
GRACEFUL_SHUTDOWN_S = 10


def serve(settings: Settings) -> None:
    uvicorn.run(
        create_app(settings),
        host="0.0.0.0",
        port=settings.port,
        proxy_headers=True,
        forwarded_allow_ips="*",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        log_level="info",
        access_log=False,
    )
