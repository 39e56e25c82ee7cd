"""Migration 027: the inline-image check answers as before, for every kind of input, while the
patterns run only where they can match."""

from __future__ import annotations

import base64
import random

import psycopg
import pytest

# The definition migration 027 replaced, verbatim.
OLD = r"""
CREATE FUNCTION pg_temp.old_has_inline_image(value text) RETURNS boolean
    LANGUAGE sql IMMUTABLE
    AS $$
    SELECT value IS NOT NULL AND (
        value ~* 'data:[a-z0-9.+-]+/[a-z0-9.+-]+(?:;[^,;]{0,200}){0,8},'
        OR value ~ '(iVBORw0KGgo|/9j/[0-9A-Za-z+/]|R0lGOD|UklGR)(?:[A-Za-z0-9+/]|\r|\n|\\r|\\n){200,}'
        OR value ~ '([A-Za-z0-9+/]{250}){16}'
    )
    $$
"""

B64 = base64.b64encode(bytes(range(256)) * 40).decode()


def corpus() -> list[str | None]:
    rng = random.Random(20261206)
    values: list[str | None] = [
        None,
        "",
        "a lighthouse at dusk",
        "data:image/png;base64,AAAA",
        "DATA:IMAGE/PNG;BASE64,AAAA",
        "see Data:text/plain,hello",
        "data:",
        "data:image/png",
        "metadata: 1",
        '{"url": "data:image/webp;name=x;base64,UklGR"}',
        "iVBORw0KGgo" + B64[:194],
        "iVBORw0KGgo" + B64[:200],
        "/9j/" + B64[:200],
        "/9j/" + B64[:201],
        "R0lGOD" + B64[:199],
        "R0lGOD" + B64[:200],
        "UklGR" + "\\n".join(B64[i : i + 50] for i in range(0, 300, 50)),
        "UklGR" + "\r\n".join(B64[i : i + 76] for i in range(0, 400, 76)),
        B64[:3999],
        B64[:4000],
        "x " + B64[:4000] + " y",
        B64[:2000] + " " + B64[:2000],
        "é" * 5000,
        "prompt " * 800,
    ]
    alphabet = "ab/+=9Z,;: \n\r\\data"
    for _ in range(300):
        size = rng.choice((5, 50, 204, 205, 206, 500, 3999, 4000, 4100))
        values.append("".join(rng.choice(alphabet) for _ in range(size)))
    for prefix in ("iVBORw0KGgo", "/9j/A", "R0lGOD", "UklGR", "data:a/b,", ""):
        for size in (150, 199, 200, 201, 3990, 4000, 4010):
            values.append(prefix + B64[:size])
    return values


async def test_the_new_check_answers_as_the_old_one(conn: psycopg.AsyncConnection) -> None:
    await conn.execute(OLD.encode())
    values = corpus()
    cur = await conn.execute(
        "SELECT v, pg_temp.old_has_inline_image(v), imagejobs_has_inline_image(v)"
        " FROM unnest(%s::text[]) AS v",
        (values,),
    )
    rows = await cur.fetchall()
    assert len(rows) == len(values)
    differing = [row[0] for row in rows if row[1] != row[2]]
    assert differing == []
    assert sum(1 for row in rows if row[1]) >= 15  # the corpus has images in it, not just text


QUERIES = {
    "prompt": "INSERT INTO image_generations (project_id, prompt) VALUES (%s, %s)",
    "metadata": "INSERT INTO image_generations (project_id, prompt, metadata) VALUES (%s, 'p', %s)",
}


@pytest.mark.parametrize("column", sorted(QUERIES))
async def test_the_constraint_still_refuses_inline_images(
    conn: psycopg.AsyncConnection, project_id: object, column: str
) -> None:
    value = "iVBORw0KGgo" + B64[:300]
    literal = value if column == "prompt" else f'{{"x": "{value}"}}'
    with pytest.raises(psycopg.errors.CheckViolation) as caught:
        await conn.execute(QUERIES[column].encode(), (project_id, literal))
    assert caught.value.diag.constraint_name == "image_generations_no_inline_images"
