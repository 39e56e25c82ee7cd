"""The Litestar application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar, Router
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin
from litestar.static_files import create_static_files_router

from api.auth import ApiKeyAuthentication, KeyCache
from api.hub import Hub
from api.openapi import document_problems
from api.problems import EXCEPTION_HANDLERS
from api.routes.actions import GenerationActions
from api.routes.events import generation_events, project_events, workflow_events
from api.routes.generations import GenerationController
from api.routes.health import healthz, readyz
from api.routes.metrics import metrics  # metrics
from api.routes.projects import ProjectController
from api.routes.webhooks import receive_webhook
from api.webhook_auth import FalVerifier
from worker.config import Settings, load_settings
from worker.db import create_pool
from worker.runtime import build_storage

MAX_BODY_BYTES = 1024 * 1024


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or load_settings()
    if not settings.database_url:
        raise SystemExit("DATABASE_URL is required for the API")
    database_url = settings.database_url

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        # A short wait for a connection: while the database is down, requests answer 503 in
        # seconds instead of hanging.
        pool = create_pool(
            database_url,
            min_size=settings.db_pool_min,
            max_size=settings.db_pool_max,
            name="imagejobs-api",
            timeout=5.0,
        )
        hub = Hub(database_url)
        await pool.open()
        await hub.start()
        await app.state.storage.prepare()
        app.state.pool = pool
        app.state.hub = hub
        try:
            yield
        finally:
            await hub.stop()
            await app.state.storage.aclose()
            await pool.close()

    v1 = Router(
        path="/",
        route_handlers=[
            ProjectController,
            GenerationController,
            GenerationActions,
            generation_events,
            project_events,
            workflow_events,
        ],
        middleware=[DefineMiddleware(ApiKeyAuthentication)],
    )
    handlers: list[object] = [v1, receive_webhook, healthz, readyz]
    # metrics: Prometheus exposition
    handlers.append(metrics)
    if settings.storage_backend == "local":
        settings.local_storage_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(
            create_static_files_router(
                path="/files",
                directories=[settings.local_storage_dir],
                name="files",
                include_in_schema=False,
            )
        )
    app = Litestar(
        route_handlers=handlers,  # type: ignore[arg-type]
        lifespan=[lifespan],
        state=State(
            {
                "settings": settings,
                "key_cache": KeyCache(),
                "storage": build_storage(settings),
                "fal_verifier": FalVerifier(settings.fal_jwks_url),
            }
        ),
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=OpenAPIConfig(
            title="imagejobs",
            version="0.1.0",
            description="AI image generation jobs on Postgres: create, follow live, fetch results.",
            path="/schema",
            render_plugins=[ScalarRenderPlugin()],
        ),
        cors_config=CORSConfig(
            allow_origins=["*"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"],
        ),
        request_max_body_size=MAX_BODY_BYTES,
    )
    document_problems(app.openapi_schema)
    return app
