"""After every other test: no row of any table holds image bytes (CONTRACT section 3)."""

from __future__ import annotations

import pytest
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

URL_COLUMNS = {"image_generations": ("original_image_url", "result_image_url", "webhook_url")}


@pytest.mark.last
async def test_no_table_holds_data_urls_or_base64_images(pool: AsyncConnectionPool) -> None:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY table_name"
        )
        tables = [str(r[0]) for r in await cur.fetchall()]
        assert {"image_generations", "image_events", "projects", "procrastinate_jobs"} <= set(
            tables
        )
        scanned = 0
        for table in tables:
            # The whole row as text: every column, every JSON value, nested or not.
            count_query = sql.SQL(
                "SELECT count(*), count(*) FILTER (WHERE imagejobs_has_inline_image(t::text)"
                " OR t::text ILIKE '%%data:image/%%') FROM {} AS t"
            ).format(sql.Identifier(table))
            cur = await conn.execute(count_query)
            row = await cur.fetchone()
            assert row is not None
            rows, offending = row
            scanned += int(rows)
            assert offending == 0, f"{table} holds image data in {offending} row(s)"
        for table, columns in URL_COLUMNS.items():
            for column in columns:
                url_query = sql.SQL(
                    "SELECT count(*) FROM {} WHERE {} IS NOT NULL AND {} !~ '^https?://'"
                ).format(sql.Identifier(table), sql.Identifier(column), sql.Identifier(column))
                cur = await conn.execute(url_query)
                row = await cur.fetchone()
                assert row is not None and row[0] == 0, f"{table}.{column} holds a non-http URL"
    assert scanned > 0, "the scan must run after the other tests have written rows"
