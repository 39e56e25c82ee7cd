from tests.providers.google_fixtures import google_emulator, google_server  # noqa: F401
from tests.providers.supabase_fixtures import supabase_storage  # noqa: F401
