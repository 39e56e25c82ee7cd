"""What a running task needs, built once per worker process and handed to tasks via context."""

from __future__ import annotations

from typing import TYPE_CHECKING

from psycopg_pool import AsyncConnectionPool

from worker.catalogue import Catalogue
from worker.config import ConfigError, Settings
from worker.lifecycle import Lifecycle
from worker.netguard import OutboundPolicy
from worker.providers.base import AsyncProvider, Provider
from worker.providers.registry import build_providers
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
        self.catalogue = Catalogue(pool)
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


def build_runtime(settings: Settings, pool: AsyncConnectionPool) -> Runtime:
    providers, queue_providers = build_providers(settings)
    return Runtime(
        settings, pool, providers, build_storage(settings), queue_providers=queue_providers
    )
