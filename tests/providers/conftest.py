from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.emulators.openai import OpenAIState, build_openai_emulator
from tests.emulators.server import serve
from tests.providers.google_fixtures import google_emulator, google_server  # noqa: F401
from tests.providers.stability_fixtures import stability_emulator, stability_server  # noqa: F401
from tests.providers.supabase_fixtures import supabase_storage  # noqa: F401


@pytest.fixture(scope="module")
def openai_server() -> Iterator[OpenAIState]:
    state = OpenAIState()
    with serve(build_openai_emulator(state)) as url:
        state.base_url = url
        yield state


@pytest.fixture
def openai_emulator(openai_server: OpenAIState) -> OpenAIState:
    """The OpenAI Images API emulator (`.url` is the SDK's base URL), fresh for each test."""
    openai_server.recorder.reset()
    openai_server.files.clear()
    openai_server.delay_s = 0.0
    return openai_server
