"""sql/schema.sql is what a fresh `imagejobs migrate` leaves, on every server the tests run on."""

from __future__ import annotations

from worker.core.sqlfiles import schema_file
from worker.devtools.schema import REGENERATE, current_schema, difference, normalise


def test_schema_sql_is_what_a_fresh_migrate_leaves(server_url: str) -> None:
    committed = schema_file().read_text(encoding="utf-8")
    current = current_schema(server_url)
    assert committed == current, (
        f"sql/schema.sql is stale (a migration changed?): regenerate it with {REGENERATE} "
        f"and commit it.\n{difference(committed, current)}"
    )


ENTRY = "--\n-- Name: {name}; Type: {kind}; Schema: public; Owner: -\n--\n\n{body}\n\n"


def test_normalise_reads_the_same_from_postgres_15_and_16_plus() -> None:
    pg15 = ENTRY.format(
        name="totals",
        kind="VIEW",
        body="CREATE VIEW public.totals AS\n SELECT lines.day,\n    sum(lines.n) AS n\n"
        "   FROM public.lines\n  GROUP BY lines.day;",
    ) + ENTRY.format(
        name="lines",
        kind="TABLE",
        body="CREATE TABLE public.lines (\n    day date,\n    n integer\n);\n"
        "ALTER TABLE ONLY public.lines ALTER COLUMN day SET (pg_attver=720838104);",
    )
    pg18 = ENTRY.format(
        name="totals",
        kind="VIEW",
        body="CREATE VIEW public.totals AS\n SELECT day,\n    sum(n) AS n\n"
        "   FROM public.lines\n  GROUP BY day;",
    ) + ENTRY.format(
        name="lines",
        kind="TABLE",
        body="CREATE TABLE public.lines (\n    day date,\n    n integer\n);",
    )
    preamble = "--\n-- PostgreSQL database dump\n--\n\n\\restrict abc\n\nSET lock_timeout = 0;\n\n"
    ending = "--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict abc\n\n"
    assert normalise(preamble + pg15 + ending) == normalise(preamble + pg18 + ending)
    assert normalise(pg18).endswith(
        "\n-- VIEW totals\nCREATE VIEW totals AS\n SELECT day,\n    sum(n) AS n\n"
        "   FROM lines\n  GROUP BY day;\n"
        "\n-- TABLE lines\nCREATE TABLE lines (\n    day date,\n    n integer\n);\n"
    )
