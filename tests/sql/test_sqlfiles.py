"""The SQL files are found where the code looks for them, and a query name means one query."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.core.sqlfiles import load_queries, migration_files, queries, query_files, sql_dir


def test_layout() -> None:
    assert [p.parent.name for p in migration_files()] == ["migrations"] * len(migration_files())
    assert migration_files()[0].name == "001_schema.sql"  # the ledger's key: the file name only
    assert not list(sql_dir().glob("[0-9][0-9][0-9]_*.sql")), "migrations live in sql/migrations/"
    assert {p.parent.name for p in query_files()} == {"queries"}
    assert "insert_generation" in queries()


def test_every_file_in_queries_holds_named_queries() -> None:
    for path in query_files():
        assert load_queries([path]), f"{path.name} has no '-- name:' query"


def test_a_name_given_twice_fails_loudly(tmp_path: Path) -> None:
    (tmp_path / "a.sql").write_text("-- name: one\nSELECT 1;\n")
    (tmp_path / "b.sql").write_text("-- name: two\nSELECT 2;\n\n-- name: one\nSELECT 3;\n")
    with pytest.raises(ValueError, match=r"'one' is named twice: in a\.sql and in b\.sql"):
        load_queries([tmp_path / "a.sql", tmp_path / "b.sql"])
    (tmp_path / "c.sql").write_text("-- name: one\nSELECT 1;\n-- name: one\nSELECT 1;\n")
    with pytest.raises(ValueError, match=r"named twice: in c\.sql and in c\.sql"):
        load_queries([tmp_path / "c.sql"])
