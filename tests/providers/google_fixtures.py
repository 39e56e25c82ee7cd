from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.emulators.google import GoogleState, build_google_emulator
from tests.emulators.server import serve


@pytest.fixture(scope="module")
def google_server() -> Iterator[GoogleState]:
    state = GoogleState()
    with serve(build_google_emulator(state)) as url:
        state.base_url = url
        yield state


@pytest.fixture
def google_emulator(google_server: GoogleState) -> GoogleState:
    google_server.recorder.reset()
    google_server.delay_s = 0.0
    return google_server
