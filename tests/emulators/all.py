"""Every provider and storage emulator at once, for tests that run the whole stack on them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from tests.emulators.fal import FalState, build_fal_emulator
from tests.emulators.google import GoogleState, build_google_emulator
from tests.emulators.openai import OpenAIState, build_openai_emulator
from tests.emulators.server import serve
from tests.emulators.stability import StabilityState, build_stability_emulator
from tests.emulators.supabase_storage import StorageState, build_supabase_storage_emulator


class Services:
    """The emulators' states; a test may pass states with its own keys."""

    def __init__(
        self,
        *,
        openai: OpenAIState | None = None,
        fal: FalState | None = None,
        storage: StorageState | None = None,
    ) -> None:
        self.openai = openai or OpenAIState()
        self.google = GoogleState()
        self.fal = fal or FalState()
        self.stability = StabilityState()
        self.storage = storage or StorageState()


@contextmanager
def serving(services: Services) -> Iterator[Services]:
    """Serves every emulator and records its address in `services` until the block ends."""
    with ExitStack() as stack:
        services.openai.base_url = stack.enter_context(
            serve(build_openai_emulator(services.openai))
        )
        services.google.base_url = stack.enter_context(
            serve(build_google_emulator(services.google))
        )
        services.fal.base_url = stack.enter_context(serve(build_fal_emulator(services.fal)))
        services.stability.base_url = stack.enter_context(
            serve(build_stability_emulator(services.stability))
        )
        services.storage.url = stack.enter_context(
            serve(build_supabase_storage_emulator(services.storage))
        )
        yield services
