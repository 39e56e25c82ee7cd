"""The provider registry: every provider this code can run, declared once.

Each entry names its provider, its default rate limit, what it can do, and how to build its
adapter from the settings (None when this process has no credentials for it). Adapters are
imported when built, so listing providers (the API, the CLI) never loads a provider SDK. Which
models a provider serves, and its default, are data: the `models` table (sql/015).

Adding a provider: its adapter module in this folder, an entry here, its settings in
worker/core/config.py, one catalogue migration (a `providers` row and its `models`), its emulator in
tests/emulators/, and docs/providers.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, NamedTuple

if TYPE_CHECKING:
    from worker.core.config import Settings
    from worker.providers.base import AsyncProvider, Provider

Capability = Literal["generate", "image_to_image", "inpaint"]


class ProviderSpec(NamedTuple):
    name: str
    # Requests per minute, all workers together, unless <NAME>_RPM says otherwise (0: no limit).
    default_rpm: int
    capabilities: frozenset[Capability]
    # Synchronous providers answer within the job (`build`); queue-based ones are submitted and
    # followed by webhook or polling (`build_queue`). Exactly one is set.
    build: Callable[[Settings], Provider | None] | None = None
    build_queue: Callable[[Settings], AsyncProvider | None] | None = None


def _local(settings: Settings) -> Provider:
    from worker.providers.local import LocalProvider

    return LocalProvider(delay_ms=settings.local_provider_delay_ms)


def _openai(settings: Settings) -> Provider | None:
    if not (settings.openai_api_key or settings.openai_base_url):
        return None
    from worker.core.netguard import OutboundPolicy
    from worker.providers.openai import OpenAIProvider

    return OpenAIProvider(
        settings.openai_api_key,
        settings.openai_base_url,
        timeout_s=settings.provider_timeout_s,
        outbound=OutboundPolicy.from_settings(settings),
    )


def _google(settings: Settings) -> Provider | None:
    if not (settings.google_api_key or settings.google_vertex_project):
        return None
    from worker.providers.google import GoogleProvider

    return GoogleProvider(
        settings.google_api_key,
        settings.google_base_url,
        timeout_s=settings.provider_timeout_s,
        vertex_project=settings.google_vertex_project,
        vertex_location=settings.google_vertex_location,
    )


def _fal(settings: Settings) -> AsyncProvider | None:
    if not settings.fal_key:
        return None
    from worker.providers.fal import FalProvider

    return FalProvider(settings.fal_key, settings.fal_base_url)


def _stability(settings: Settings) -> Provider | None:
    if not settings.stability_api_key:
        return None
    from worker.providers.stability import StabilityProvider

    return StabilityProvider(
        settings.stability_api_key,
        settings.stability_base_url,
        timeout_s=settings.provider_timeout_s,
    )


ALL: frozenset[Capability] = frozenset({"generate", "image_to_image", "inpaint"})

PROVIDERS: dict[str, ProviderSpec] = {
    spec.name: spec
    for spec in (
        ProviderSpec("local", 0, ALL, build=_local),
        ProviderSpec("openai", 50, ALL, build=_openai),
        ProviderSpec("google", 60, ALL, build=_google),
        ProviderSpec("fal", 60, frozenset({"generate", "image_to_image"}), build_queue=_fal),
        # Stability allows 150 requests per 10 s; the queue stays well under that.
        ProviderSpec("stability", 600, ALL, build=_stability),
    )
}
NAMES: tuple[str, ...] = tuple(PROVIDERS)


def build_providers(settings: Settings) -> tuple[dict[str, Provider], dict[str, AsyncProvider]]:
    """The adapters this process has credentials for: synchronous ones, then queue-based."""
    sync: dict[str, Provider] = {}
    queued: dict[str, AsyncProvider] = {}
    for spec in PROVIDERS.values():
        if spec.build is not None and (adapter := spec.build(settings)) is not None:
            sync[spec.name] = adapter
        if spec.build_queue is not None and (queue_adapter := spec.build_queue(settings)):
            queued[spec.name] = queue_adapter
    return sync, queued


def rate_limits(settings: Settings) -> dict[str, int]:
    """Requests per minute per provider, all workers together: each one's default, unless
    <PROVIDER>_RPM says otherwise. A provider with no limit (local) is absent."""
    defaults = {spec.name: spec.default_rpm for spec in PROVIDERS.values() if spec.default_rpm}
    return {**defaults, **settings.provider_rpm}
