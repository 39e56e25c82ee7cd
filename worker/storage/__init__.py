"""Where results, thumbnails and masks are stored: local files or Supabase Storage."""

from __future__ import annotations

from worker.core.config import ConfigError, Settings
from worker.storage.base import Storage
from worker.storage.local import LocalStorage


def build_storage(settings: Settings) -> Storage:
    if settings.storage_backend == "local":
        return LocalStorage(settings.local_storage_dir, settings.public_base_url)
    if not (settings.supabase_url and settings.supabase_service_role_key):
        raise ConfigError(
            "STORAGE_BACKEND=supabase needs SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY"
        )
    from worker.storage.supabase import SupabaseStorage

    return SupabaseStorage(
        settings.supabase_url,
        settings.supabase_service_role_key,
        settings.supabase_bucket,
        signed_urls=settings.supabase_signed_urls,
        signed_url_ttl_s=settings.supabase_signed_url_ttl_s,
    )
