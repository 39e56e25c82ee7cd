"""`imagejobs api`: uvicorn serving the app on 0.0.0.0:$PORT."""

from __future__ import annotations

import asyncio
from types import FrameType

import uvicorn
from litestar import Litestar

from api.app import create_app
from worker.core.config import Settings

# Below the web service's maxShutdownDelaySeconds in render.yaml (30 s, tested), so open
# connections never hold a deploy and uvicorn exits before Render's SIGKILL.
GRACEFUL_SHUTDOWN_S = 10


class GracefulServer(uvicorn.Server):
    """On SIGTERM, end every SSE stream with a `retry:` hint before uvicorn waits for open
    connections: clients reconnect to the new instance at once, and the old one exits promptly."""

    def __init__(self, config: uvicorn.Config, app: Litestar) -> None:
        super().__init__(config)
        self.litestar = app
        self.loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        self.loop = asyncio.get_running_loop()
        await super().serve(sockets)  # type: ignore[arg-type]

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        hub = getattr(self.litestar.state, "hub", None)
        if hub is not None and self.loop is not None:
            self.loop.call_soon_threadsafe(hub.shut_down_streams)
        super().handle_exit(sig, frame)


def serve(settings: Settings) -> None:
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host="0.0.0.0",
        port=settings.port,
        proxy_headers=True,
        forwarded_allow_ips="*",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        # Logging is configured once for every command (worker/core/logs.py): uvicorn's loggers,
        # access log included, propagate to that handler and its JSON formatter, at LOG_LEVEL.
        log_config=None,
        access_log=True,
    )
    GracefulServer(config, app).run()
