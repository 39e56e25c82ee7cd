"""Locates the project's SQL files: the migrations in sql/migrations/ (the history, applied by
`imagejobs migrate`), sql/schema.sql (the current schema, generated from them) and the named
queries in sql/queries/<table>.sql."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import LiteralString, cast

_MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
_QUERY_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def sql_dir() -> Path:
    """`worker/sql` inside an installed wheel, else the checkout's top-level `sql/`."""
    package = Path(__file__).resolve().parents[1]  # worker/
    for candidate in (package / "sql", package.parent / "sql"):
        if (candidate / "migrations").is_dir() and (candidate / "queries").is_dir():
            return candidate
    raise FileNotFoundError("cannot find the imagejobs sql/ directory")


def migration_files() -> list[Path]:
    """sql/migrations/NNN_*.sql in order. The ledger (imagejobs_migrations) records each by its
    file name alone, so the folder it lives in is free to change."""
    files = [p for p in (sql_dir() / "migrations").iterdir() if _MIGRATION_NAME.match(p.name)]
    return sorted(files, key=lambda p: p.name)


def schema_file() -> Path:
    return sql_dir() / "schema.sql"


def query_files() -> list[Path]:
    return sorted((sql_dir() / "queries").glob("*.sql"), key=lambda p: p.name)


@functools.cache
def queries() -> dict[str, LiteralString]:
    return load_queries(query_files())


def load_queries(paths: list[Path]) -> dict[str, LiteralString]:
    """Every named query of these files; a name given twice is an error, not a shadow."""
    named: dict[str, LiteralString] = {}
    origin: dict[str, str] = {}
    for path in paths:
        parts = _QUERY_HEADER.split(path.read_text(encoding="utf-8"))
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            if name in origin:
                raise ValueError(
                    f"query {name!r} is named twice: in {origin[name]} and in {path.name}"
                )
            origin[name] = path.name
            # The SQL comes from our own files, never from input: as safe as a literal.
            named[name] = cast(LiteralString, body.strip())
    return named


def query(name: str) -> LiteralString:
    return queries()[name]
