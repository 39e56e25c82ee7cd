"""README.md's variable table and the declarations in worker/core/config.py say the same."""

from __future__ import annotations

import re
from pathlib import Path

from worker.core.config import DECLARED, declarations

README = Path(__file__).resolve().parent.parent / "README.md"
SECTION = "## Commands and configuration"
HEADER = "| variable | default | meaning |"
NAME = re.compile(r"`([A-Z][A-Z0-9_]*)`")


def table_variables() -> set[str]:
    """The variables named in the first column of the table (rows may group several)."""
    text = README.read_text()
    section = text[text.index(SECTION) :]
    rows = section[section.index(HEADER) :].splitlines()[2:]
    names: set[str] = set()
    for row in rows:
        if not row.startswith("|"):
            break
        first = row.split("|")[1]
        found = NAME.findall(first)
        assert found, f"a row of the variable table names no variable: {row}"
        names.update(found)
    return names


def declared_names() -> list[str]:
    return [d.setting.env for cls in DECLARED for d in declarations(cls)]


def _pattern(name: str) -> re.Pattern[str]:
    """`<PROVIDER>_RPM` stands for any such variable."""
    parts = re.split(r"<[A-Z]+>", name)
    return re.compile("[A-Z][A-Z0-9]*".join(re.escape(part) for part in parts))


def test_every_declared_variable_is_in_the_readme_table() -> None:
    table = table_variables()
    missing = [
        name
        for name in declared_names()
        if not any(_pattern(name).fullmatch(listed) for listed in table)
    ]
    assert missing == [], f"add to README.md's variable table: {missing}"


def test_every_variable_in_the_readme_table_is_declared() -> None:
    patterns = [_pattern(name) for name in declared_names()]
    unknown = sorted(
        name for name in table_variables() if not any(p.fullmatch(name) for p in patterns)
    )
    assert unknown == [], f"declare in worker/core/config.py or drop from README.md: {unknown}"


def test_each_variable_is_declared_once() -> None:
    names = declared_names()
    assert sorted(n for n in set(names) if names.count(n) > 1) == []


def test_every_declaration_has_a_line_of_doc() -> None:
    for cls in DECLARED:
        for declared in declarations(cls):
            doc = declared.setting.doc
            assert doc.strip() and "\n" not in doc, declared.field


ROOT = README.parent
# Reading one variable by name; passing the whole environment on (to a child process, or to
# `load` and `read_setting`) is fine.
ENV_READ = re.compile(r"os\.getenv|environ\.get\(|environ\[")


def test_no_module_reads_a_variable_around_the_declarations() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for package in ("worker", "api")
        for path in sorted((ROOT / package).rglob("*.py"))
        if path != ROOT / "worker" / "core" / "config.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if ENV_READ.search(line)
    ]
    assert offenders == [], "read these through worker/core/config.py"
