"""The Litestar application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Router
from litestar.config.cors import CORSConfig
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.handlers import BaseRouteHandler
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin
from litestar.static_files import create_static_files_router

from api.auth.jwt import JwtVerifier
from api.auth.keys import ApiKeyAuthentication, KeyCache, MembershipCache
from api.auth.webhooks import FalVerifier
from api.deps import DEPENDENCIES
from api.fresh_urls import fresh_urls
from api.limits import StreamSlots
from api.openapi import document_auth, document_problems
from api.problems import EXCEPTION_HANDLERS, InvalidField
from api.routes.actions import GenerationActions
from api.routes.bulk import BulkActions
from api.routes.dashboard import dashboard, dashboard_assets
from api.routes.deletes import DeletionController, GenerationDelete, ProjectDelete
from api.routes.events import generation_events, project_events, workflow_events
from api.routes.generations import GenerationController
from api.routes.health import healthz, readyz
from api.routes.metrics import metrics
from api.routes.models import models
from api.routes.projects import ProjectController
from api.routes.usage import usage
from api.routes.webhooks import receive_webhook
from api.routes.workspace_events import workspace_project_events
from api.streams.hub import Hub
from worker.core.catalogue import Catalogue
from worker.core.config import Settings, load_settings
from worker.core.db import create_pool
from worker.storage import build_storage

MAX_BODY_BYTES = 1024 * 1024


def no_nul_in_path(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """`/files/%00`: the file system refuses NUL with a ValueError, which would be a 500."""
    if "\x00" in connection.scope["path"]:
        raise InvalidField("path", "must not contain NUL characters", status_code=400)


def cors_config(settings: Settings) -> CORSConfig | None:
    """CORS_ORIGINS, else every origin in development and none (no CORS headers) in production."""
    origins = settings.cors_origins
    if origins is None:
        origins = () if settings.is_production else ("*",)
    if not origins:
        return None
    return CORSConfig(
        allow_origins=list(origins),
        allow_headers=[
            "Authorization",
            "Content-Type",
            "Idempotency-Key",
            "Last-Event-ID",
            "X-Workspace-Id",
        ],
        expose_headers=[
            "Location",
            "Retry-After",
            "RateLimit-Limit",
            "RateLimit-Remaining",
            "RateLimit-Reset",
            "RateLimit-Policy",
            "Deprecation",
            "Sunset",
            "Link",
        ],
    )


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
        app.state.catalogue = Catalogue(pool)
        try:
            yield
        finally:
            await hub.stop()
            await app.state.storage.aclose()
            await pool.close()

    storage = build_storage(settings)
    v1 = Router(
        path="/",
        route_handlers=[
            ProjectController,
            GenerationController,
            GenerationActions,
            BulkActions,
            # deletes: generations and projects with their files, and the audit records
            GenerationDelete,
            ProjectDelete,
            DeletionController,
            models,
            # quotas: today's use against the workspace's limits
            usage,
            generation_events,
            project_events,
            workflow_events,
            # dashboard: every project's counters, live
            workspace_project_events,
        ],
        middleware=[DefineMiddleware(ApiKeyAuthentication)],
        # storage: private buckets' URLs are signed afresh on every read
        after_request=fresh_urls(storage),
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
                guards=[no_nul_in_path],
            )
        )
    # dashboard: the page at / and its static assets
    handlers += [dashboard, dashboard_assets]
    app = Litestar(
        route_handlers=handlers,  # type: ignore[arg-type]
        lifespan=[lifespan],
        dependencies=DEPENDENCIES,
        state=State(
            {
                "settings": settings,
                "key_cache": KeyCache(settings.auth_cache_ttl_s),
                "storage": storage,
                "fal_verifier": FalVerifier(settings.fal_jwks_url),
                # auth: Supabase user JWTs and their workspace memberships
                "jwt_verifier": JwtVerifier.configured(
                    settings.supabase_jwt_secret, settings.supabase_url
                ),
                "membership_cache": MembershipCache(settings.auth_cache_ttl_s),
                # limits: concurrent SSE streams per key in this process.
                "stream_slots": StreamSlots(),
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
        cors_config=cors_config(settings),
        request_max_body_size=MAX_BODY_BYTES,
        # ops: logging is configured once for every command (worker/core/logs.py); Litestar's
        # default config would replace the root handler and its JSON formatter.
        logging_config=None,
    )
    document_problems(app.openapi_schema)
    document_auth(app.openapi_schema)
    return app
