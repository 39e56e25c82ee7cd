"""What a running task needs, built once per worker process and handed to tasks via context."""

from __future__ import annotations

from typing import TYPE_CHECKING

from psycopg_pool import AsyncConnectionPool

from worker.config import ConfigError, Settings
from worker.lifecycle import Lifecycle
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
    raise ConfigError(f"STORAGE_BACKEND={settings.storage_backend} is not supported by this build")


def build_providers(settings: Settings) -> dict[str, Provider]:
    return {"local": LocalProvider(delay_ms=settings.local_provider_delay_ms)}


def build_runtime(settings: Settings, pool: AsyncConnectionPool) -> Runtime:
    return Runtime(settings, pool, build_providers(settings), build_storage(settings))
