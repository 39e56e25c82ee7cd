"""What a running task needs, built once per worker process and handed to tasks via context."""

from __future__ import annotations

from typing import TYPE_CHECKING

from psycopg_pool import AsyncConnectionPool

from worker.config import ConfigError, Settings
from worker.lifecycle import Lifecycle
from worker.netguard import OutboundPolicy
from worker.providers.base import AsyncProvider, Provider
from worker.providers.local import LocalProvider
from worker.ratelimit import RateLimiter
from worker.storage.base import Storage
from worker.storage.local import LocalStorage

if TYPE_CHECKING:
    from procrastinate import JobContext


class Runtime:
    def __init__(
        self,
        settings: Settings,
        pool: AsyncConnectionPool,
        providers: dict[str, Provider],
        storage: Storage,
        queue_providers: dict[str, AsyncProvider] | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.settings = settings
        self.lifecycle = Lifecycle(pool)
        self.providers = providers
        self.queue_providers = queue_providers or {}
        self.storage = storage
        self.limiter = limiter or RateLimiter(pool, settings.provider_rpm)
        # ssrf: what source, mask, result and webhook URLs may reach.
        self.outbound = OutboundPolicy.from_settings(settings)

    @property
    def provider_names(self) -> tuple[str, ...]:
        """Every provider this worker can run, synchronous or queue-based."""
        return (*self.providers, *self.queue_providers)

    def provider(self, name: str) -> Provider | None:
        return self.providers.get(name)

    def queue_provider(self, name: str) -> AsyncProvider | None:
        return self.queue_providers.get(name)

    def webhook_url(self, provider: str) -> str | None:
        base = self.settings.webhook_base_url
        return f"{base}/v1/webhooks/{provider}" if base else None

    @classmethod
    def from_context(cls, context: JobContext) -> Runtime:
        runtime = context.additional_context.get("runtime")
        if not isinstance(runtime, cls):
            raise RuntimeError("the worker was started without its runtime")
        return runtime


def build_storage(settings: Settings) -> Storage:
    if settings.storage_backend == "local":
        return LocalStorage(settings.local_storage_dir, settings.public_base_url)
    if not (settings.supabase_url and settings.supabase_service_role_key):
        raise ConfigError(
            "STORAGE_BACKEND=supabase needs SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY"
        )
    from worker.storage.supabase import SupabaseStorage

    return SupabaseStorage(
        settings.supabase_url,
        settings.supabase_service_role_key,
        settings.supabase_bucket,
        signed_urls=settings.supabase_signed_urls,
        signed_url_ttl_s=settings.supabase_signed_url_ttl_s,
    )


def build_providers(settings: Settings) -> dict[str, Provider]:
    """The providers that answer within the call, for those this worker has configuration for."""
    providers: dict[str, Provider] = {
        "local": LocalProvider(delay_ms=settings.local_provider_delay_ms)
    }
    if settings.openai_api_key or settings.openai_base_url:
        from worker.providers.openai import OpenAIProvider

        providers["openai"] = OpenAIProvider(
            settings.openai_api_key,
            settings.openai_base_url,
            timeout_s=settings.provider_timeout_s,
            outbound=OutboundPolicy.from_settings(settings),
        )
    if settings.google_api_key or settings.google_vertex_project:
        from worker.providers.google import GoogleProvider

        providers["google"] = GoogleProvider(
            settings.google_api_key,
            settings.google_base_url,
            timeout_s=settings.provider_timeout_s,
            vertex_project=settings.google_vertex_project,
            vertex_location=settings.google_vertex_location,
        )
    return providers


def build_queue_providers(settings: Settings) -> dict[str, AsyncProvider]:
    if not settings.fal_key:
        return {}
    from worker.providers.fal import FalProvider

    return {"fal": FalProvider(settings.fal_key, settings.fal_base_url)}


def build_runtime(settings: Settings, pool: AsyncConnectionPool) -> Runtime:
    return Runtime(
        settings,
        pool,
        build_providers(settings),
        build_storage(settings),
        queue_providers=build_queue_providers(settings),
    )
