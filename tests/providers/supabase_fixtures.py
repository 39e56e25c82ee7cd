"""The `supabase_storage` fixture: a Supabase Storage emulator on a real port, fresh per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.emulators.server import serve
from tests.emulators.supabase_storage import StorageState, build_supabase_storage_emulator


@pytest.fixture
def supabase_storage() -> Iterator[StorageState]:
    """`.url` (the project URL, without /storage/v1), `.key` (the service role key), `.recorder`,
    `.objects` ("bucket/path" → (bytes, content type)); no bucket exists until one is created."""
    state = StorageState()
    with serve(build_supabase_storage_emulator(state)) as url:
        state.url = url
        yield state
