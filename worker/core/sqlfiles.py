"""Locates the project's SQL files and loads the named queries in sql/queries.sql."""

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
        if (candidate / "queries.sql").is_file():
            return candidate
    raise FileNotFoundError("cannot find the imagejobs sql/ directory")


def migration_files() -> list[Path]:
    files = [p for p in sql_dir().iterdir() if _MIGRATION_NAME.match(p.name)]
    return sorted(files, key=lambda p: p.name)


@functools.cache
def queries() -> dict[str, LiteralString]:
    text = (sql_dir() / "queries.sql").read_text(encoding="utf-8")
    parts = _QUERY_HEADER.split(text)
    named: dict[str, LiteralString] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        # The SQL comes from our own files, never from input: as safe as a literal.
        named[name] = cast(LiteralString, body.strip())
    return named


def query(name: str) -> LiteralString:
    return queries()[name]
