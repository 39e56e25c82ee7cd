"""What `APP_ENV=production` refuses to start with. The API and the worker call
`production_problems` at start-up and exit with the list when it is not empty."""

from __future__ import annotations

import psycopg

from worker.core.config import Settings

# Supabase's transaction pooler (Supavisor, transaction mode) cannot hold a LISTEN.
TRANSACTION_POOLER_PORT = "6543"


def _ports(database_url: str) -> list[str]:
    try:
        params = psycopg.conninfo.conninfo_to_dict(database_url)
    except psycopg.ProgrammingError:
        return []
    return [port.strip() for port in str(params.get("port") or "5432").split(",")]


def auth_configured(settings: Settings) -> bool:
    """User JWTs can be verified (a shared secret or the project's JWKS), or the operator said
    API keys alone are intended."""
    return bool(
        settings.supabase_jwt_secret or settings.supabase_url or settings.auth_api_keys_only
    )


def production_problems(settings: Settings, *, command: str = "api") -> list[str]:
    """Each reason not to run this configuration in production; empty outside production.
    Messages name variables, never their values. User auth and the webhook secret are the
    API's concerns: the worker neither authenticates callers nor verifies webhooks."""
    if not settings.is_production:
        return []
    problems = []
    serves_http = command == "api"
    if serves_http and not auth_configured(settings):
        problems.append(
            "no user authentication: set SUPABASE_JWT_SECRET or SUPABASE_URL, "
            "or AUTH_API_KEYS_ONLY=true to serve API keys only"
        )
    if settings.storage_backend == "local":
        problems.append("STORAGE_BACKEND=local keeps images on this machine's disk: use supabase")
    if serves_http and not settings.webhook_secret:
        problems.append("WEBHOOK_SECRET is not set: provider webhooks could not be verified")
    if not settings.database_url:
        problems.append("DATABASE_URL is not set")
    elif TRANSACTION_POOLER_PORT in _ports(settings.database_url):
        problems.append(
            "DATABASE_URL uses port 6543, the transaction pooler, which cannot LISTEN: "
            "use the direct connection or the session pooler (port 5432)"
        )
    return problems


def refuse_unsafe_production(settings: Settings, command: str) -> None:
    problems = production_problems(settings, command=command)
    if problems:
        lines = "\n".join(f"  - {problem}" for problem in problems)
        raise SystemExit(
            f"imagejobs {command}: refusing to start with APP_ENV=production:\n{lines}"
        )
