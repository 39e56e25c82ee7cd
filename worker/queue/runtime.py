"""What a running task needs, built once per worker process and handed to tasks via context."""

from __future__ import annotations

from typing import TYPE_CHECKING

from psycopg_pool import AsyncConnectionPool

from worker.core.catalogue import Catalogue
from worker.core.config import Settings
from worker.core.netguard import OutboundPolicy
from worker.providers.base import AsyncProvider, Provider
from worker.providers.registry import build_providers, rate_limits
from worker.queue.lifecycle import Lifecycle
from worker.queue.ratelimit import RateLimiter
from worker.storage import build_storage
from worker.storage.base import Storage

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
        self.lifecycle = Lifecycle(pool, group_commit=settings.worker_group_commit)
        self.catalogue = Catalogue(pool)
        self.providers = providers
        self.queue_providers = queue_providers or {}
        self.storage = storage
        self.limiter = limiter or RateLimiter(pool, rate_limits(settings))
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


def build_runtime(settings: Settings, pool: AsyncConnectionPool) -> Runtime:
    providers, queue_providers = build_providers(settings)
    return Runtime(
        settings, pool, providers, build_storage(settings), queue_providers=queue_providers
    )
