"""Settings read once from the environment (names from CONTRACT.md section 2).

Each setting is declared once, as a field of a Struct below: its type, its default, and an
`Annotated[..., Setting("ENV_NAME", "doc")]` naming the environment variable with one line of
doc. `load` derives how to read the variable from the field's type:

- `int` and `float` (at least `Setting.minimum`, 0 unless said), `bool` (true/false, 1/0, yes/no,
  on/off), `Path`, `str` and `str | None`, `Literal[...]` (one of the choices);
- `tuple[str, ...] | None`: a comma-separated list (unset: None; set but empty: no items).

An unset or empty variable means the default. Every environment variable the code reads is
declared here (README.md's variable table is held to these declarations by
tests/test_config_table.py); the few settings that depend on others are computed by
`_derive`, each said there.
"""

from __future__ import annotations

import functools
import os
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import NoneType, UnionType
from typing import Annotated, Any, Literal, TypeVar

import msgspec

_RPM = re.compile(r"^[A-Z][A-Z0-9]*_RPM$")


class ConfigError(ValueError):
    """An environment variable has a value we cannot use."""


@dataclass(frozen=True)
class Setting:
    """Where a field comes from: its environment variable, and what it means in one line."""

    env: str
    doc: str
    # ints and floats: the smallest value accepted.
    minimum: int = 0
    # strs: a trailing slash is dropped (base URLs).
    strip_slash: bool = False
    # Reads the raw value (None when unset or empty) when the type alone cannot say how.
    parse: Callable[[str, str | None], Any] | None = None
    # Computed by `_derive` from this variable and others, not read on its own.
    derived: bool = False


# ssrf: OUTBOUND_ALLOW_PRIVATE, with the spellings a bool accepts as well.
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

PrivateAccessValue = Literal["false", "loopback", "true"]


def _private_access(name: str, raw: str | None) -> str | None:
    value = (raw or "").strip().lower()
    if value == "":
        return None  # the environment's default, in `_derive`
    if value not in _PRIVATE_ACCESS:
        raise ConfigError(f"{name} must be false, loopback or true, got {value!r}")
    return _PRIVATE_ACCESS[value]


def _flag(name: str, raw: str | None) -> bool:
    """A lenient switch: anything but a true spelling is off (LOG_PROMPTS never refused a start)."""
    return (raw or "").lower() in ("1", "true", "yes", "on")


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    database_url: Annotated[
        str | None,
        Setting(
            "DATABASE_URL",
            "Postgres URL; Supabase: direct or session pooler (transaction mode cannot LISTEN)",
        ),
    ] = None
    port: Annotated[int, Setting("PORT", "API port", minimum=1)] = 8000
    app_env: Annotated[
        Literal["development", "production"], Setting("APP_ENV", "development or production")
    ] = "development"
    storage_backend: Annotated[
        Literal["local", "supabase"], Setting("STORAGE_BACKEND", "where images are stored")
    ] = "local"
    local_storage_dir: Annotated[
        Path, Setting("LOCAL_STORAGE_DIR", "where the local storage backend writes files")
    ] = Path("var/storage")
    # Derived: http://localhost:$PORT when unset.
    public_base_url: Annotated[
        str, Setting("PUBLIC_BASE_URL", "the base of local files' URLs", derived=True)
    ] = "http://localhost:8000"
    local_provider_delay_ms: Annotated[
        int,
        Setting(
            "LOCAL_PROVIDER_DELAY_MS",
            "simulated generation time of the local provider (it draws while the time runs)",
        ),
    ] = 300
    worker_concurrency: Annotated[
        int, Setting("WORKER_CONCURRENCY", "jobs one worker runs at once", minimum=1)
    ] = 10
    worker_db_pool_max: Annotated[
        int,
        Setting(
            "WORKER_DB_POOL_MAX",
            "a worker's connection pool, at most (jobs hold a connection only per statement)",
            minimum=4,
        ),
    ] = 18
    worker_group_commit: Annotated[
        bool,
        Setting(
            "WORKER_GROUP_COMMIT",
            "a worker commits its jobs' lifecycle writes in groups (worker/queue/committer.py)",
        ),
    ] = True
    worker_shutdown_grace_s: Annotated[
        float, Setting("WORKER_SHUTDOWN_GRACE_S", "how long SIGTERM waits for running jobs")
    ] = 25.0
    heartbeat_interval_s: Annotated[
        float, Setting("WORKER_HEARTBEAT_S", "seconds between a worker's heartbeats")
    ] = 10.0
    # A worker silent for this long is dead: the rescuer re-queues its jobs. It must exceed the
    # heartbeat interval comfortably (draining workers keep beating, see worker/queue/daemon.py).
    rescue_stale_s: Annotated[
        float, Setting("RESCUE_STALE_S", "seconds of silence after which a worker is dead")
    ] = 60.0
    # Every worker checks this often for `doing` jobs whose worker's presence lock is gone (a
    # dead worker, noticed in seconds: worker/queue/presence.py); 0 leaves it to the heartbeat.
    rescue_fast_s: Annotated[
        float, Setting("RESCUE_FAST_S", "seconds between checks for dead workers' locks; 0: off")
    ] = 1.0
    # Pending/processing generations whose job is gone are re-queued after this long.
    rescue_grace_s: Annotated[
        float, Setting("RESCUE_GRACE_S", "seconds before a job-less generation is re-queued")
    ] = 120.0
    # Read at import by worker/queue/tasks.py (the periodic task is declared there).
    rescue_cron: Annotated[
        str, Setting("RESCUE_CRON", "when the rescuer runs (6 fields for seconds)")
    ] = "* * * * *"
    # retention (worker/queue/retention.py): how long each growing table keeps its rows, in
    # days (fractions allowed); 0 keeps them forever. Pruned by the periodic task `prune`.
    retention_events_days: Annotated[
        float, Setting("RETENTION_EVENTS_DAYS", "days image_events of finished work are kept")
    ] = 30.0
    retention_jobs_days: Annotated[
        float, Setting("RETENTION_JOBS_DAYS", "days finished procrastinate jobs are kept")
    ] = 7.0
    retention_webhooks_days: Annotated[
        float, Setting("RETENTION_WEBHOOKS_DAYS", "days webhook deliveries and attempts are kept")
    ] = 30.0
    # Off by default: results (their files in storage) are the product, kept until deleted.
    retention_results_days: Annotated[
        float, Setting("RETENTION_RESULTS_DAYS", "days result files are kept; 0: forever")
    ] = 0.0
    # Read at import by worker/queue/tasks.py, like RESCUE_CRON.
    prune_cron: Annotated[
        str, Setting("PRUNE_CRON", "when the pruner runs (6 fields for seconds)")
    ] = "7 * * * *"
    prune_batch_size: Annotated[
        int, Setting("PRUNE_BATCH_SIZE", "rows one pruning statement deletes at most", minimum=1)
    ] = 1000
    prune_max_s: Annotated[
        float, Setting("PRUNE_MAX_S", "seconds one pruning run may take before it stops")
    ] = 60.0
    db_pool_min: Annotated[int, Setting("DB_POOL_MIN", "API connection pool, smallest")] = 1
    db_pool_max: Annotated[
        int, Setting("DB_POOL_MAX", "API connection pool, largest", minimum=1)
    ] = 10
    sse_keepalive_s: Annotated[
        float, Setting("SSE_KEEPALIVE_S", "seconds between keep-alive comments on idle streams")
    ] = 15.0
    sentry_dsn: Annotated[str | None, Setting("SENTRY_DSN", "error reporting to Sentry")] = None
    openai_api_key: Annotated[str | None, Setting("OPENAI_API_KEY", "OpenAI's API key")] = None
    openai_base_url: Annotated[
        str | None, Setting("OPENAI_BASE_URL", "an OpenAI-compatible server")
    ] = None
    google_api_key: Annotated[str | None, Setting("GOOGLE_API_KEY", "Gemini's API key")] = None
    google_base_url: Annotated[
        str | None, Setting("GOOGLE_BASE_URL", "another Gemini endpoint")
    ] = None
    google_vertex_project: Annotated[
        str | None, Setting("GOOGLE_CLOUD_PROJECT", "Vertex AI project")
    ] = None
    google_vertex_location: Annotated[
        str | None, Setting("GOOGLE_CLOUD_LOCATION", "Vertex AI location")
    ] = None
    fal_key: Annotated[str | None, Setting("FAL_KEY", "fal's API key")] = None
    stability_api_key: Annotated[
        str | None, Setting("STABILITY_API_KEY", "Stability AI's API key")
    ] = None
    stability_base_url: Annotated[
        str, Setting("STABILITY_BASE_URL", "Stability AI's API", strip_slash=True)
    ] = "https://api.stability.ai"
    fal_base_url: Annotated[str, Setting("FAL_BASE_URL", "fal's queue API", strip_slash=True)] = (
        "https://queue.fal.run"
    )
    fal_jwks_url: Annotated[
        str, Setting("FAL_JWKS_URL", "the keys fal signs its webhooks with")
    ] = "https://rest.alpha.fal.ai/.well-known/jwks.json"
    poll_interval_s: Annotated[
        float, Setting("POLL_INTERVAL_S", "seconds between polls of queue-based providers")
    ] = 5.0
    poll_timeout_s: Annotated[
        float, Setting("POLL_TIMEOUT_S", "seconds before a polled generation is given up")
    ] = 300.0
    supabase_url: Annotated[
        str | None, Setting("SUPABASE_URL", "the Supabase project", strip_slash=True)
    ] = None
    supabase_service_role_key: Annotated[
        str | None, Setting("SUPABASE_SERVICE_ROLE_KEY", "Supabase Storage's service key")
    ] = None
    supabase_bucket: Annotated[str, Setting("SUPABASE_BUCKET", "Supabase Storage bucket")] = (
        "images"
    )
    supabase_signed_urls: Annotated[
        bool, Setting("SUPABASE_SIGNED_URLS", "signed URLs, for private buckets")
    ] = False
    supabase_signed_url_ttl_s: Annotated[
        int, Setting("SUPABASE_SIGNED_URL_TTL_S", "how long a signed URL is valid", minimum=60)
    ] = 7 * 24 * 3600
    # Overrides of the providers' default rate limits, from <PROVIDER>_RPM (any such variable).
    provider_rpm: Annotated[
        dict[str, int],
        Setting("<PROVIDER>_RPM", "a provider's requests per minute", minimum=1, derived=True),
    ] = {}
    provider_timeout_s: Annotated[
        float, Setting("PROVIDER_TIMEOUT_S", "seconds one provider request may take")
    ] = 120.0
    # Derived, not read: where providers can call us back, PUBLIC_BASE_URL when it is https (a
    # provider cannot reach localhost). None means queue-based providers are polled only.
    webhook_base_url: str | None = None
    webhook_secret: Annotated[
        str | None, Setting("WEBHOOK_SECRET", "verifies incoming generic webhooks")
    ] = None
    outgoing_webhook_secret: Annotated[
        str | None, Setting("OUTGOING_WEBHOOK_SECRET", "signs the webhooks we send")
    ] = None
    # auth: Supabase user JWTs (HS256 with the secret; ES256/RS256 from SUPABASE_URL's JWKS) and
    # how long an API key lookup or a user's memberships are cached (revocation delay).
    supabase_jwt_secret: Annotated[
        str | None, Setting("SUPABASE_JWT_SECRET", "verifies HS256 Supabase user JWTs")
    ] = None
    auth_cache_ttl_s: Annotated[
        float, Setting("AUTH_CACHE_TTL_S", "how long API keys and memberships are cached")
    ] = 30.0
    # limits: request limits and production safety (docs/security.md).
    rate_limit_create_per_min: Annotated[
        int, Setting("RATE_LIMIT_CREATE_PER_MIN", "creations per key per minute; 0 disables")
    ] = 120
    sse_max_streams_per_key: Annotated[
        int, Setting("SSE_MAX_STREAMS_PER_KEY", "open event streams per key; 0 = unlimited")
    ] = 20
    auth_api_keys_only: Annotated[
        bool, Setting("AUTH_API_KEYS_ONLY", "production with API keys and no user auth")
    ] = False
    # None: the environment's default (every origin in development, none in production).
    cors_origins: Annotated[
        tuple[str, ...] | None, Setting("CORS_ORIGINS", "origins allowed to call from a browser")
    ] = None
    # ssrf: which internal addresses outbound fetches may reach (see worker/core/netguard.py):
    # "false" (public only), "loopback" or "true" (every private range; never metadata).
    # Derived default: "false" in production, "loopback" otherwise.
    outbound_allow_private: Annotated[
        PrivateAccessValue,
        Setting(
            "OUTBOUND_ALLOW_PRIVATE",
            "which internal addresses outbound fetches may reach",
            parse=_private_access,
            derived=True,
        ),
    ] = "loopback"
    # metrics: GET /metrics bearer token (None: open like /healthz) and the look-back window of
    # the DB-derived latency/failure series.
    metrics_token: Annotated[str | None, Setting("METRICS_TOKEN", "bearer token for /metrics")] = (
        None
    )
    metrics_window_s: Annotated[
        int, Setting("METRICS_WINDOW_S", "look-back window of /metrics' series", minimum=60)
    ] = 3600
    # images: the most pixels an image (source, mask, result) may have before it is decoded.
    image_max_pixels: Annotated[
        int, Setting("IMAGE_MAX_PIXELS", "the most pixels an image may have", minimum=1)
    ] = 40_000_000
    # logs (worker/core/logs.py, which reads them before the rest: see `read_setting`).
    log_format: Annotated[
        str | None, Setting("LOG_FORMAT", "json or text; otherwise guessed from the terminal")
    ] = None
    log_level: Annotated[str, Setting("LOG_LEVEL", "the root logger's level")] = "INFO"
    log_prompts: Annotated[
        bool, Setting("LOG_PROMPTS", "prompts logged at INFO, not only DEBUG", parse=_flag)
    ] = False

    @property
    def is_production(self) -> bool:
        return self.app_env == "production"


class ClientSettings(msgspec.Struct, frozen=True, kw_only=True):
    """The CLI's client commands: read without the server's settings (no database)."""

    url: Annotated[str, Setting("IMAGEJOBS_URL", "the API the client commands call")] = (
        "http://localhost:8000"
    )
    api_key: Annotated[str, Setting("IMAGEJOBS_API_KEY", "the client commands' API key")] = ""


class BenchSettings(msgspec.Struct, frozen=True, kw_only=True):
    """`imagejobs bench` (worker/devtools/bench)."""

    database_url: Annotated[
        str | None, Setting("BENCH_DATABASE_URL", "a Postgres server for the benchmark")
    ] = None


# Every Struct whose fields are read from the environment.
DECLARED: tuple[type[msgspec.Struct], ...] = (Settings, ClientSettings, BenchSettings)


@dataclass(frozen=True)
class Declared:
    """One field's declaration, as `load` reads it."""

    field: str
    setting: Setting
    type: Any
    default: Any


@functools.cache
def declarations(cls: type[msgspec.Struct]) -> tuple[Declared, ...]:
    """The fields of `cls` read from the environment, in order."""
    hints = typing.get_type_hints(cls, include_extras=True)
    found = []
    for info in msgspec.structs.fields(cls):
        hint = hints[info.name]
        if typing.get_origin(hint) is not Annotated:
            continue
        base, *extras = typing.get_args(hint)
        setting = next((extra for extra in extras if isinstance(extra, Setting)), None)
        if setting is None:
            continue
        default = info.default
        if default is msgspec.NODEFAULT:
            default = info.default_factory()
        found.append(Declared(info.name, setting, base, default))
    return tuple(found)


def _int(name: str, raw: str | None, default: int, minimum: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def _float(name: str, raw: str | None, default: float, minimum: int) -> float:
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from exc
    if not value >= minimum:  # NaN too
        raise ConfigError(f"{name} must be >= {minimum}, got {raw!r}")
    return value


def _bool(name: str, raw: str | None, default: bool) -> bool:
    value = (raw or "").strip().lower()
    if value == "":
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def _choice(name: str, raw: str | None, default: str, choices: tuple[str, ...]) -> str:
    value = raw or default
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _items(raw: str | None) -> tuple[str, ...] | None:
    if raw is None:
        return None
    return tuple(item.strip().rstrip("/") for item in raw.split(",") if item.strip())


def _read(declared: Declared, env: Mapping[str, str]) -> Any:
    """One variable, read as its field's type says."""
    setting, kind, default = declared.setting, declared.type, declared.default
    name, raw = setting.env, env.get(setting.env)
    if setting.parse is not None:
        return setting.parse(name, raw or None)
    optional = isinstance(kind, UnionType) and NoneType in typing.get_args(kind)
    if optional:
        (kind,) = [arg for arg in typing.get_args(kind) if arg is not NoneType]
    if kind is bool:
        return _bool(name, raw, default)
    if kind is int:
        return _int(name, raw, default, setting.minimum)
    if kind is float:
        return _float(name, raw, default, setting.minimum)
    if kind is Path:
        return Path(raw) if raw else default
    if typing.get_origin(kind) is Literal:
        return _choice(name, raw, default, typing.get_args(kind))
    if typing.get_origin(kind) is tuple:
        return _items(raw)
    if kind is str:
        value = raw or default
        if setting.strip_slash and value:
            value = value.rstrip("/")
        return (value or None) if optional else value
    raise TypeError(f"{declared.field}: no reader for {kind!r}")


S = TypeVar("S", bound=msgspec.Struct)


def load(cls: type[S], env: Mapping[str, str] | None = None) -> S:
    """`cls` with each declared field read from `env` (the process environment by default)."""
    env = os.environ if env is None else env
    values = {d.field: _read(d, env) for d in declarations(cls) if not d.setting.derived}
    if cls is Settings:
        values |= _derive(values, env)
    return cls(**values)


def _derive(values: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """The settings that depend on more than their own variable."""
    declared = {d.field: d for d in declarations(Settings)}
    public = env.get("PUBLIC_BASE_URL")
    rpm = declared["provider_rpm"].setting
    return {
        # PUBLIC_BASE_URL, or this process's own port on localhost.
        "public_base_url": (public or f"http://localhost:{values['port']}").rstrip("/"),
        # Providers can call back only a public https address.
        "webhook_base_url": (
            public.rstrip("/") if public and public.startswith("https://") else None
        ),
        # <PROVIDER>_RPM for any provider (worker/providers/registry.py knows which exist).
        "provider_rpm": {
            name.removesuffix("_RPM").lower(): _int(name, env[name], 0, rpm.minimum)
            for name in env
            if _RPM.match(name)
        },
        # Public addresses only in production, loopback too in development.
        "outbound_allow_private": (
            _read(declared["outbound_allow_private"], env)
            or ("false" if values["app_env"] == "production" else "loopback")
        ),
    }


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    return load(Settings, env)


def read_setting(field: str, env: Mapping[str, str] | None = None) -> Any:
    """One setting alone, for what must be read before (or without) the rest: the logging
    set-up, the rescuer's schedule at import. Validated like `load_settings` would."""
    env = os.environ if env is None else env
    (declared,) = [d for d in declarations(Settings) if d.field == field]
    return _read(declared, env)
