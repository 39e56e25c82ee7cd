"""Settings read once from the environment (names from CONTRACT.md section 2)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import msgspec


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
    db_pool_min: int = 1
    db_pool_max: int = 10
    sse_keepalive_s: float = 15.0
    sentry_dsn: str | None = None

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


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name) or default
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


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
        db_pool_min=_int(env, "DB_POOL_MIN", 1),
        db_pool_max=_int(env, "DB_POOL_MAX", 10, minimum=1),
        sse_keepalive_s=_float(env, "SSE_KEEPALIVE_S", 15.0),
        sentry_dsn=env.get("SENTRY_DSN") or None,
    )
