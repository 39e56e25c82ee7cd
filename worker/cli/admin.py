"""The `imagejobs` command: a thin dispatcher to the API, the worker and the database tools."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from uuid import UUID

from worker.cli.commands import add_commands, run_client_command
from worker.cli.deletes import add_delete_command
from worker.core.config import ConfigError, Settings, load_settings
from worker.core.logs import configure_logging
from worker.core.redact import install_log_redaction, secret_values
from worker.core.safety import refuse_unsafe_production

if TYPE_CHECKING:
    from worker.core.quotas import Usage


def _require_database(settings: Settings) -> str:
    if not settings.database_url:
        raise SystemExit("DATABASE_URL is not set")
    return settings.database_url


def _migrate(settings: Settings, _: argparse.Namespace) -> None:
    from worker.core.migrate import migrate

    applied = asyncio.run(migrate(_require_database(settings)))
    print("\n".join(f"applied {name}" for name in applied) or "database is up to date")


def _api(settings: Settings, _: argparse.Namespace) -> None:
    from api.server import serve

    refuse_unsafe_production(settings, "api")
    serve(settings)


def _worker(settings: Settings, _: argparse.Namespace) -> None:
    from worker.queue.daemon import run_worker

    refuse_unsafe_production(settings, "worker")
    asyncio.run(run_worker(settings))


def _api_key_create(settings: Settings, args: argparse.Namespace) -> None:
    import psycopg

    from worker.core.apikeys import create_api_key

    async def create() -> str:
        async with await psycopg.AsyncConnection.connect(
            _require_database(settings), autocommit=True
        ) as conn:
            return await create_api_key(conn, args.workspace, args.name)

    key = asyncio.run(create())
    print(f"API key for workspace {args.workspace} (shown once; only its hash is stored):")
    print(key)


def _api_key_list(settings: Settings, args: argparse.Namespace) -> None:
    import psycopg

    from worker.core.apikeys import ApiKeyInfo, list_api_keys

    async def fetch() -> list[ApiKeyInfo]:
        async with await psycopg.AsyncConnection.connect(
            _require_database(settings), autocommit=True
        ) as conn:
            return await list_api_keys(conn, args.workspace)

    def when(moment: datetime | None) -> str:
        return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if moment else "-"

    keys = asyncio.run(fetch())
    if not keys:
        print(f"workspace {args.workspace} has no API keys")
        return
    rows = [("ID", "PREFIX", "NAME", "CREATED", "LAST USED", "REVOKED")] + [
        (
            str(k.id),
            k.prefix,
            k.name or "-",
            when(k.created_at),
            when(k.last_used_at),
            when(k.revoked_at),
        )
        for k in keys
    ]
    _print_table(rows)


def _print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def _api_key_revoke(settings: Settings, args: argparse.Namespace) -> None:
    import psycopg

    from worker.core.apikeys import ApiKeyInfo, RevokeError, revoke_api_key

    async def revoke() -> tuple[ApiKeyInfo, bool]:
        async with await psycopg.AsyncConnection.connect(
            _require_database(settings), autocommit=True
        ) as conn:
            return await revoke_api_key(conn, args.key)

    try:
        key, revoked_now = asyncio.run(revoke())
    except RevokeError as exc:
        raise SystemExit(f"api-key revoke: {exc}") from None
    if not revoked_now:
        print(f"API key {key.id} ({key.prefix}...) was already revoked at {key.revoked_at}")
        return
    print(
        f"revoked API key {key.id} ({key.prefix}...) of workspace {key.workspace_id}; running "
        f"APIs refuse it within AUTH_CACHE_TTL_S ({settings.auth_cache_ttl_s:g} s)"
    )


def _models(settings: Settings, args: argparse.Namespace) -> None:
    import psycopg

    from worker.core.catalogue import ModelEntry, list_models

    async def fetch() -> list[ModelEntry]:
        async with await psycopg.AsyncConnection.connect(
            _require_database(settings), autocommit=True
        ) as conn:
            return await list_models(conn)

    entries = [e for e in asyncio.run(fetch()) if args.provider in (None, e.provider)]
    rows = [("PROVIDER", "MODEL", "STATUS", "SHUTDOWN", "REPLACEMENT", "DEFAULT")] + [
        (
            e.provider,
            e.model,
            e.status,
            str(e.shutdown_date or "-"),
            e.replacement or "-",
            "yes" if e.is_default else "",
        )
        for e in entries
    ]
    _print_table(rows)


def _models_default(settings: Settings, args: argparse.Namespace) -> None:
    import psycopg

    from worker.core.catalogue import ModelEntry, set_default

    async def change() -> ModelEntry:
        async with await psycopg.AsyncConnection.connect(
            _require_database(settings), autocommit=True
        ) as conn:
            return await set_default(
                conn,
                args.provider,
                args.model,
                source=f"imagejobs models default, {datetime.now(UTC).date()}",
            )

    try:
        entry = asyncio.run(change())
    except ValueError as exc:
        raise SystemExit(f"models default: {exc}") from None
    print(
        f"{entry.provider}: new generations that name no model now use {entry.model} "
        f"({entry.status}); running APIs show it within 30 s"
    )


def _limit(kind: type[int] | type[float], minimum: float) -> Callable[[str], int | float | None]:
    """An argparse type for a quota: a number >= minimum, or `none` (unlimited)."""

    def parse(text: str) -> int | float | None:
        if text.strip().lower() in ("none", "unlimited"):
            return None
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'} or none, got {text!r}"
            ) from None
        if not value >= minimum or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"must be {minimum:g} or more (or none), got {text}")
        return value

    return parse


def _print_quota(usage: Usage) -> None:
    def shown(value: float | None) -> str:
        return "unlimited" if value is None else f"{value:g}"

    def utc(moment: datetime) -> str:
        return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    limits = usage.limits
    print(f"workspace {usage.workspace_id}")
    _print_table(
        [
            ("LIMIT", "VALUE", "TODAY"),
            ("generations_per_day", shown(limits.generations_per_day), str(usage.generations)),
            ("usd_per_day", shown(limits.usd_per_day), f"{usage.estimated_usd:g}"),
            ("max_concurrency", shown(limits.max_concurrency), "-"),
        ]
    )
    print(
        f"window: the UTC day {utc(usage.window.start)} to {utc(usage.window.end)}; "
        f"resets at {utc(usage.window.end)}"
    )


def _quota_show(settings: Settings, args: argparse.Namespace) -> None:
    import psycopg

    from worker.core.quotas import workspace_usage

    async def fetch() -> Usage:
        async with await psycopg.AsyncConnection.connect(
            _require_database(settings), autocommit=True
        ) as conn:
            return await workspace_usage(conn, args.workspace)

    _print_quota(asyncio.run(fetch()))


def _quota_set(settings: Settings, args: argparse.Namespace) -> None:
    import psycopg

    from worker.core.quotas import UNSET, set_limits, workspace_usage

    given = {
        name: getattr(args, name, UNSET)
        for name in ("generations_per_day", "usd_per_day", "max_concurrency")
    }
    if all(value is UNSET for value in given.values()):
        raise SystemExit(
            "quota set: name at least one of --generations-per-day, --usd-per-day, "
            "--max-concurrency (a value, or none for unlimited)"
        )

    async def change() -> Usage:
        async with await psycopg.AsyncConnection.connect(
            _require_database(settings), autocommit=True
        ) as conn:
            await set_limits(conn, args.workspace, **given)
            return await workspace_usage(conn, args.workspace)

    try:
        usage = asyncio.run(change())
    except ValueError as exc:
        raise SystemExit(f"quota set: {exc}") from None
    _print_quota(usage)


def _prune(settings: Settings, args: argparse.Namespace) -> None:
    import psycopg

    from worker.queue import retention
    from worker.storage import build_storage

    plan = retention.retentions(settings)
    if not plan:
        print("nothing to prune: every RETENTION_*_DAYS is 0 (kept forever)")
        return

    async def run() -> retention.PruneRun:
        async with await psycopg.AsyncConnection.connect(
            _require_database(settings), autocommit=True
        ) as conn:
            if args.dry_run:
                return retention.PruneRun(deleted=await retention.due(conn, plan))
            storage = build_storage(settings)
            try:
                return await retention.prune(
                    conn,
                    plan,
                    batch_size=settings.prune_batch_size,
                    max_s=settings.prune_max_s,
                    storage=storage,
                )
            finally:
                await storage.aclose()

    done = asyncio.run(run())
    # results: generations whose files go (or went), not rows.
    verb = "would delete" if args.dry_run else "deleted"
    _print_table(
        [("TABLE", "KEPT (DAYS)", verb.upper())]
        + [(r.target, f"{r.days:g}", str(done.deleted[r.target])) for r in plan]
    )
    if done.failed:
        raise SystemExit(f"not pruned (see the warnings above): {', '.join(done.failed)}")
    if not done.finished:
        print(f"stopped after PRUNE_MAX_S ({settings.prune_max_s:g} s): more is due, run it again")


def _dev(settings: Settings, _: argparse.Namespace) -> None:
    from worker.devtools.dev import run_dev

    sys.exit(run_dev(settings))


def build_parser() -> argparse.ArgumentParser:
    # `imagejobs bench ...` hands its own arguments to worker.devtools.bench.run (see main()).
    parser = argparse.ArgumentParser(prog="imagejobs", description=__doc__)
    parser.add_argument("--log-level", default=None, help="overrides LOG_LEVEL (default INFO)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "migrate", help="apply procrastinate's schema and sql/migrations/NNN_*.sql"
    ).set_defaults(run=_migrate)
    commands.add_parser("api", help="serve the HTTP API on 0.0.0.0:$PORT").set_defaults(run=_api)
    commands.add_parser("worker", help="run the worker daemon until SIGTERM").set_defaults(
        run=_worker
    )
    commands.add_parser("dev", help="embedded Postgres, migrate, API and worker").set_defaults(
        run=_dev
    )
    add_commands(commands)
    api_key = commands.add_parser("api-key", help="manage API keys")
    api_key_commands = api_key.add_subparsers(dest="api_key_command", required=True)
    create = api_key_commands.add_parser("create", help="create a key and print it once")
    create.add_argument("--workspace", type=UUID, required=True)
    create.add_argument("--name", default="")
    create.set_defaults(run=_api_key_create)
    listing = api_key_commands.add_parser(
        "list", help="list a workspace's keys (prefixes, never the keys)"
    )
    listing.add_argument("--workspace", type=UUID, required=True)
    listing.set_defaults(run=_api_key_list)
    revoke = api_key_commands.add_parser(
        "revoke", help="revoke a key, named by its id, its prefix or the key itself"
    )
    revoke.add_argument("key", metavar="KEY_ID_OR_PREFIX")
    revoke.set_defaults(run=_api_key_revoke)
    models = commands.add_parser("models", help="the model catalogue; change a default")
    models.add_argument("--provider", default=None, help="only this provider's models")
    models.set_defaults(run=_models)
    models_commands = models.add_subparsers(dest="models_command")
    default = models_commands.add_parser(
        "default", help="make MODEL the default of PROVIDER (no deploy needed)"
    )
    default.add_argument("provider", metavar="PROVIDER")
    default.add_argument("model", metavar="MODEL")
    default.set_defaults(run=_models_default)
    quota = commands.add_parser("quota", help="a workspace's daily quotas and today's use")
    quota_commands = quota.add_subparsers(dest="quota_command", required=True)
    quota_set = quota_commands.add_parser(
        "set",
        help="set limits (only those named change; none: unlimited); enforced from the next insert",
    )
    quota_set.add_argument("--workspace", type=UUID, required=True)
    # SUPPRESS: a flag not given stays out of the namespace, so its limit is left as it is.
    quota_set.add_argument(
        "--generations-per-day",
        type=_limit(int, 0),
        default=argparse.SUPPRESS,
        metavar="N|none",
        help="generations created per UTC day (0 freezes the workspace)",
    )
    quota_set.add_argument(
        "--usd-per-day",
        type=_limit(float, 0),
        default=argparse.SUPPRESS,
        metavar="USD|none",
        help="estimated list-price spend per UTC day",
    )
    quota_set.add_argument(
        "--max-concurrency",
        type=_limit(int, 1),
        default=argparse.SUPPRESS,
        metavar="N|none",
        help="generations processing at once (stored; 1 or more)",
    )
    quota_set.set_defaults(run=_quota_set)
    quota_show = quota_commands.add_parser("show", help="the limits and today's use")
    quota_show.add_argument("--workspace", type=UUID, required=True)
    quota_show.set_defaults(run=_quota_show)
    prune = commands.add_parser(
        "prune", help="delete what is older than its retention (RETENTION_*_DAYS), in batches"
    )
    prune.add_argument(
        "--dry-run", action="store_true", help="count what would be deleted, delete nothing"
    )
    prune.set_defaults(run=_prune)
    add_delete_command(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        logging.basicConfig(level="WARNING")
        from worker.devtools.bench.run import main as bench

        bench(argv[1:])
        return
    args = build_parser().parse_args(argv)
    if getattr(args, "client_command", None) is not None:
        # A client of a running API: no database, no server settings.
        run_client_command(args.client_command, args)
        return
    configure_logging(os.environ, level=args.log_level)
    try:
        settings = load_settings()
    except ConfigError as exc:
        raise SystemExit(f"configuration error: {exc}") from exc
    install_log_redaction(secret_values(settings))
    if args.command in ("api", "worker"):
        from worker.core.observability import init_sentry

        init_sentry(settings.sentry_dsn, component=args.command, environment=settings.app_env)
    args.run(settings, args)
