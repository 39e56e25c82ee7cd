"""Settings read once from the environment (names from CONTRACT.md section 2)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import msgspec

_RPM = re.compile(r"^[A-Z][A-Z0-9]*_RPM$")


class ConfigError(ValueError):
    """An environment variable has a value we cannot use."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    database_url: str | None = None
    port: int = 8000
    app_env: str = "development"
    storage_backend: str = "local"
    local_storage_dir: Path = Path("var/storage")
    public_base_url: str = "http://localhost:8000"
    local_provider_delay_ms: int = 300
    worker_concurrency: int = 10
    worker_shutdown_grace_s: float = 25.0
    heartbeat_interval_s: float = 10.0
    # A worker silent for this long is dead: the rescuer re-queues its jobs. It must exceed the
    # heartbeat interval comfortably (draining workers keep beating, see worker/queue/daemon.py).
    rescue_stale_s: float = 60.0
    # Pending/processing generations whose job is gone are re-queued after this long.
    rescue_grace_s: float = 120.0
    db_pool_min: int = 1
    db_pool_max: int = 10
    sse_keepalive_s: float = 15.0
    sentry_dsn: str | None = None
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    google_api_key: str | None = None
    google_base_url: str | None = None
    google_vertex_project: str | None = None
    google_vertex_location: str | None = None
    fal_key: str | None = None
    stability_api_key: str | None = None
    stability_base_url: str = "https://api.stability.ai"
    fal_base_url: str = "https://queue.fal.run"
    fal_jwks_url: str = "https://rest.alpha.fal.ai/.well-known/jwks.json"
    poll_interval_s: float = 5.0
    poll_timeout_s: float = 300.0
    supabase_url: str | None = None
    supabase_service_role_key: str | None = None
    supabase_bucket: str = "images"
    supabase_signed_urls: bool = False
    supabase_signed_url_ttl_s: int = 7 * 24 * 3600
    # Overrides of the providers' default rate limits, from <PROVIDER>_RPM.
    provider_rpm: dict[str, int] = {}
    provider_timeout_s: float = 120.0
    # Where providers can call us back: PUBLIC_BASE_URL when it is https (a provider cannot
    # reach localhost). None means queue-based providers are polled only.
    webhook_base_url: str | None = None
    webhook_secret: str | None = None
    outgoing_webhook_secret: str | None = None
    # auth: Supabase user JWTs (HS256 with the secret; ES256/RS256 from SUPABASE_URL's JWKS) and
    # how long an API key lookup or a user's memberships are cached (revocation delay).
    supabase_jwt_secret: str | None = None
    auth_cache_ttl_s: float = 30.0
    # limits: request limits and production safety (docs/security.md).
    rate_limit_create_per_min: int = 120
    sse_max_streams_per_key: int = 20
    auth_api_keys_only: bool = False
    # None: the environment's default (every origin in development, none in production).
    cors_origins: tuple[str, ...] | None = None
    # ssrf: which internal addresses outbound fetches may reach (see worker/core/netguard.py):
    # "false" (public only), "loopback" or "true" (every private range; never metadata).
    outbound_allow_private: str = "loopback"
    # metrics: GET /metrics bearer token (None: open like /healthz) and the look-back window of
    # the DB-derived latency/failure series.
    metrics_token: str | None = None
    metrics_window_s: int = 3600
    # images: the most pixels an image (source, mask, result) may have before it is decoded.
    image_max_pixels: int = 40_000_000

    @property
    def is_production(self) -> bool:
        return self.app_env == "production"


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from exc


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name) or default
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _webhook_base(public_base_url: str | None) -> str | None:
    if public_base_url and public_base_url.startswith("https://"):
        return public_base_url.rstrip("/")
    return None


def _origins(raw: str | None) -> tuple[str, ...] | None:
    if raw is None:
        return None
    return tuple(origin.strip().rstrip("/") for origin in raw.split(",") if origin.strip())


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    port = _int(env, "PORT", 8000, minimum=1)
    return Settings(
        database_url=env.get("DATABASE_URL") or None,
        port=port,
        app_env=_choice(env, "APP_ENV", "development", ("development", "production")),
        storage_backend=_choice(env, "STORAGE_BACKEND", "local", ("local", "supabase")),
        local_storage_dir=Path(env.get("LOCAL_STORAGE_DIR") or "var/storage"),
        public_base_url=(env.get("PUBLIC_BASE_URL") or f"http://localhost:{port}").rstrip("/"),
        local_provider_delay_ms=_int(env, "LOCAL_PROVIDER_DELAY_MS", 300),
        worker_concurrency=_int(env, "WORKER_CONCURRENCY", 10, minimum=1),
        worker_shutdown_grace_s=_float(env, "WORKER_SHUTDOWN_GRACE_S", 25.0),
        heartbeat_interval_s=_float(env, "WORKER_HEARTBEAT_S", 10.0),
        rescue_stale_s=_float(env, "RESCUE_STALE_S", 60.0),
        rescue_grace_s=_float(env, "RESCUE_GRACE_S", 120.0),
        db_pool_min=_int(env, "DB_POOL_MIN", 1),
        db_pool_max=_int(env, "DB_POOL_MAX", 10, minimum=1),
        sse_keepalive_s=_float(env, "SSE_KEEPALIVE_S", 15.0),
        sentry_dsn=env.get("SENTRY_DSN") or None,
        openai_api_key=env.get("OPENAI_API_KEY") or None,
        openai_base_url=env.get("OPENAI_BASE_URL") or None,
        google_api_key=env.get("GOOGLE_API_KEY") or None,
        google_base_url=env.get("GOOGLE_BASE_URL") or None,
        google_vertex_project=env.get("GOOGLE_CLOUD_PROJECT") or None,
        google_vertex_location=env.get("GOOGLE_CLOUD_LOCATION") or None,
        fal_key=env.get("FAL_KEY") or None,
        stability_api_key=env.get("STABILITY_API_KEY") or None,
        stability_base_url=(env.get("STABILITY_BASE_URL") or "https://api.stability.ai").rstrip(
            "/"
        ),
        fal_base_url=(env.get("FAL_BASE_URL") or "https://queue.fal.run").rstrip("/"),
        fal_jwks_url=env.get("FAL_JWKS_URL") or "https://rest.alpha.fal.ai/.well-known/jwks.json",
        poll_interval_s=_float(env, "POLL_INTERVAL_S", 5.0),
        poll_timeout_s=_float(env, "POLL_TIMEOUT_S", 300.0),
        supabase_url=(env.get("SUPABASE_URL") or "").rstrip("/") or None,
        supabase_service_role_key=env.get("SUPABASE_SERVICE_ROLE_KEY") or None,
        supabase_bucket=env.get("SUPABASE_BUCKET") or "images",
        supabase_signed_urls=_bool(env, "SUPABASE_SIGNED_URLS", False),
        supabase_signed_url_ttl_s=_int(env, "SUPABASE_SIGNED_URL_TTL_S", 7 * 24 * 3600, minimum=60),
        # <PROVIDER>_RPM overrides a provider's default rate limit (worker/providers/registry.py).
        provider_rpm={
            name.removesuffix("_RPM").lower(): _int(env, name, 0, minimum=1)
            for name in env
            if _RPM.match(name)
        },
        provider_timeout_s=_float(env, "PROVIDER_TIMEOUT_S", 120.0),
        webhook_base_url=_webhook_base(env.get("PUBLIC_BASE_URL")),
        webhook_secret=env.get("WEBHOOK_SECRET") or None,
        outgoing_webhook_secret=env.get("OUTGOING_WEBHOOK_SECRET") or None,
        # auth: Supabase user JWTs and the auth cache
        supabase_jwt_secret=env.get("SUPABASE_JWT_SECRET") or None,
        auth_cache_ttl_s=_float(env, "AUTH_CACHE_TTL_S", 30.0),
        # limits: request limits and production safety.
        rate_limit_create_per_min=_int(env, "RATE_LIMIT_CREATE_PER_MIN", 120),
        sse_max_streams_per_key=_int(env, "SSE_MAX_STREAMS_PER_KEY", 20),
        auth_api_keys_only=_bool(env, "AUTH_API_KEYS_ONLY", False),
        cors_origins=_origins(env.get("CORS_ORIGINS")),
        # ssrf: loopback only in development, public addresses only in production.
        outbound_allow_private=_private_access(env),
        # metrics: optional bearer token and the window of DB-derived series
        metrics_token=env.get("METRICS_TOKEN") or None,
        metrics_window_s=_int(env, "METRICS_WINDOW_S", 3600, minimum=60),
        image_max_pixels=_int(env, "IMAGE_MAX_PIXELS", 40_000_000, minimum=1),
    )


# ssrf: OUTBOUND_ALLOW_PRIVATE, with the spellings _bool accepts as well.
_PRIVATE_ACCESS = {
    "false": "false",
    "0": "false",
    "no": "false",
    "off": "false",
    "loopback": "loopback",
    "true": "true",
    "1": "true",
    "yes": "true",
    "on": "true",
}


def _private_access(env: Mapping[str, str]) -> str:
    raw = (env.get("OUTBOUND_ALLOW_PRIVATE") or "").strip().lower()
    if raw == "":
        production = env.get("APP_ENV") == "production"
        return "false" if production else "loopback"
    if raw not in _PRIVATE_ACCESS:
        raise ConfigError(f"OUTBOUND_ALLOW_PRIVATE must be false, loopback or true, got {raw!r}")
    return _PRIVATE_ACCESS[raw]
