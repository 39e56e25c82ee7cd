from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.emulators.server import serve
from tests.emulators.stability import StabilityState, build_stability_emulator


@pytest.fixture(scope="module")
def stability_server() -> Iterator[StabilityState]:
    state = StabilityState()
    with serve(build_stability_emulator(state)) as url:
        state.base_url = url
        yield state


@pytest.fixture
def stability_emulator(stability_server: StabilityState) -> StabilityState:
    """The Stability REST API emulator (`.base_url` is STABILITY_BASE_URL), fresh for each test."""
    stability_server.recorder.reset()
    stability_server.delay_s = 0.0
    stability_server.always_json = False
    stability_server.last_seed = None
    return stability_server
