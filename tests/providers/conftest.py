from tests.providers.supabase_fixtures import supabase_storage  # noqa: F401
