from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.emulators.fal import FalState, build_fal_emulator
from tests.emulators.server import serve


@pytest.fixture(scope="module")
def fal_server() -> Iterator[FalState]:
    state = FalState()
    with serve(build_fal_emulator(state)) as url:
        state.base_url = url
        yield state


@pytest.fixture
def fal(fal_server: FalState) -> FalState:
    fal_server.recorder.reset()
    fal_server.next_behaviour.clear()
    return fal_server
