"""Row Level Security (sql/008) on a database prepared like a Supabase project.

Two workspaces A and B, users a (member of A) and b (member of B). Every statement runs as
PostgREST would run it: `SET LOCAL ROLE authenticated` (or anon) with the JWT claims set.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, LiteralString

import psycopg
import pytest
from psycopg import errors, sql

from tests.sql.helpers import Conn, fetch_value, insert_generation
from tests.sql.supabase import acting_as, supabase_database
from worker.core.migrate import migrate

# Readable by the members of the row's workspace.
MEMBER_TABLES = ("projects", "image_generations", "image_events", "workflow_nodes")
# Nobody but the owner and service_role.
PRIVATE_TABLES = (
    "api_keys",
    "imagejobs_deletions",
    "webhook_deliveries",
    "outgoing_webhook_attempts",
    "provider_requests",
    "imagejobs_migrations",
    "procrastinate_jobs",
    "procrastinate_events",
    "procrastinate_periodic_defers",
    "procrastinate_workers",
)


@dataclass(frozen=True)
class Workspace:
    id: uuid.UUID
    user_id: uuid.UUID
    project_id: uuid.UUID
    generation_id: uuid.UUID
    workflow_id: uuid.UUID


@dataclass(frozen=True)
class World:
    url: str
    a: Workspace
    b: Workspace


@pytest.fixture(scope="module")
def rls_url(server_url: str) -> Iterator[str]:
    with supabase_database(server_url) as url:
        yield url


@pytest.fixture(scope="module")
async def world(rls_url: str) -> World:
    """Seeded as the owner (the API and the worker): both workspaces, one generation each, an
    API key each, a webhook delivery, an outgoing attempt, a rate-limit grant, a worker."""
    async with await psycopg.AsyncConnection.connect(rls_url, autocommit=True) as conn:
        a, b = await _workspace(conn), await _workspace(conn)
        await conn.execute(
            "INSERT INTO webhook_deliveries (id, provider, generation_id) VALUES ('msg_1', 'fal', %s)",
            (a.generation_id,),
        )
        await conn.execute(
            "INSERT INTO outgoing_webhook_attempts (generation_id, event_id, message_id, type, attempt)"
            " VALUES (%s, 1, 'msg_out', 'generation.started', 1)",
            (a.generation_id,),
        )
        await conn.execute(
            "INSERT INTO imagejobs_deletions (workspace_id, kind, target_id, deleted_by)"
            " VALUES (%s, 'generation', gen_random_uuid(), 'api_key:seed')",
            (a.id,),
        )
        await conn.execute("SELECT * FROM imagejobs_acquire_rate('local', 10)")
        await conn.execute("SELECT procrastinate_register_worker_v1()")
        await conn.execute(
            "INSERT INTO procrastinate_periodic_defers (task_name, defer_timestamp) VALUES ('tick', 1)"
        )
        return World(rls_url, a, b)


async def _workspace(conn: Conn) -> Workspace:
    workspace_id, user_id, workflow_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await conn.execute(
        "INSERT INTO workspace_members (workspace_id, user_id) VALUES (%s, %s)",
        (workspace_id, user_id),
    )
    await conn.execute(
        "INSERT INTO api_keys (workspace_id, prefix, key_hash) VALUES (%s, 'ij_', %s)",
        (workspace_id, uuid.uuid4().bytes),
    )
    project_id = uuid.UUID(
        str(
            await fetch_value(
                conn,
                "INSERT INTO projects (workspace_id, name) VALUES (%s, 'p') RETURNING id",
                (workspace_id,),
            )
        )
    )
    generation_id = await insert_generation(
        conn, project_id, user_id=user_id, node_id="n1", workflow_id=workflow_id
    )
    return Workspace(workspace_id, user_id, project_id, generation_id, workflow_id)


@pytest.fixture
async def conn(world: World) -> AsyncIterator[Conn]:
    """A connection to the Supabase-like database, outside any transaction."""
    async with await psycopg.AsyncConnection.connect(world.url) as connection:
        yield connection


def _table(name: str) -> sql.Identifier:
    return sql.Identifier(name)


async def _count(conn: Conn, table: str) -> int:
    cur = await conn.execute(sql.SQL("SELECT count(*) FROM {}").format(_table(table)))
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def _workspaces_seen(conn: Conn, table: str) -> set[uuid.UUID]:
    cur = await conn.execute(sql.SQL("SELECT DISTINCT workspace_id FROM {}").format(_table(table)))
    return {uuid.UUID(str(row[0])) for row in await cur.fetchall()}


async def _rowcount(conn: Conn, statement: LiteralString, params: Any = None) -> int:
    cur = await conn.execute(statement, params)
    return cur.rowcount


@pytest.mark.parametrize("table", [*MEMBER_TABLES, "workspace_members"])
async def test_members_read_only_their_own_workspace(conn: Conn, world: World, table: str) -> None:
    async with acting_as(conn, "service_role"):
        assert await _workspaces_seen(conn, table) >= {world.a.id, world.b.id}
    for member in (world.a, world.b):
        async with acting_as(conn, "authenticated", member.user_id):
            assert await _workspaces_seen(conn, table) == {member.id}


@pytest.mark.parametrize("view", ["generation_cost_lines", "generation_costs"])
async def test_cost_views_apply_the_readers_policies(conn: Conn, world: World, view: str) -> None:
    # Views run as their owner unless security_invoker is set, which would bypass RLS.
    async with acting_as(conn, "service_role"):
        assert await _workspaces_seen(conn, view) >= {world.a.id, world.b.id}
    for member in (world.a, world.b):
        async with acting_as(conn, "authenticated", member.user_id):
            assert await _workspaces_seen(conn, view) == {member.id}
    async with acting_as(conn, "anon"):
        assert await _count(conn, view) == 0


async def test_prices_are_readable_but_not_writable_by_members(conn: Conn, world: World) -> None:
    async with acting_as(conn, "authenticated", world.a.user_id):
        assert await _count(conn, "generation_prices") > 0
        cur = await conn.execute("UPDATE generation_prices SET usd_per_unit = 0")
        assert cur.rowcount == 0


async def test_a_stranger_and_anon_read_nothing(conn: Conn, world: World) -> None:
    tables = (*MEMBER_TABLES, "workspace_members", *PRIVATE_TABLES)
    async with acting_as(conn, "authenticated", uuid.uuid4()):
        assert {t: await _count(conn, t) for t in tables} == dict.fromkeys(tables, 0)
    async with acting_as(conn, "anon"):
        assert {t: await _count(conn, t) for t in tables} == dict.fromkeys(tables, 0)


@pytest.mark.parametrize("table", PRIVATE_TABLES)
async def test_private_tables_are_hidden_from_members(conn: Conn, world: World, table: str) -> None:
    async with acting_as(conn, "service_role"):
        assert await _count(conn, table) > 0
    async with acting_as(conn, "authenticated", world.a.user_id):
        assert await _count(conn, table) == 0
        cur = await conn.execute(sql.SQL("DELETE FROM {}").format(_table(table)))
        assert cur.rowcount == 0
    async with acting_as(conn, "authenticated", world.a.user_id):
        with pytest.raises(errors.InsufficientPrivilege):
            await conn.execute(sql.SQL("TRUNCATE {} CASCADE").format(_table(table)))
    async with acting_as(conn, "service_role"):
        assert await _count(conn, table) > 0


async def test_members_cannot_delete_around_the_api(conn: Conn, world: World) -> None:
    """Deletes remove files first (worker/storage/deletes.py): a member deleting rows with SQL
    would leave them behind, so neither rows nor the delete function are theirs."""
    async with acting_as(conn, "authenticated", world.a.user_id):
        for statement in (
            "DELETE FROM image_generations",
            "DELETE FROM projects",
            "UPDATE projects SET deleting_at = now()",
        ):
            assert await _rowcount(conn, statement) == 0
    async with acting_as(conn, "authenticated", world.a.user_id):
        with pytest.raises(errors.InsufficientPrivilege):
            await conn.execute(
                "SELECT * FROM imagejobs_delete_generations(%s, ARRAY[%s]::uuid[],"
                " ARRAY[now()], false)",
                (world.a.id, world.a.generation_id),
            )
    async with acting_as(conn, "service_role"):
        assert await _count(conn, "image_generations") >= 2


async def test_a_member_cannot_add_to_a_project_being_deleted(conn: Conn, world: World) -> None:
    async with await psycopg.AsyncConnection.connect(world.url, autocommit=True) as owner:
        project_id = await fetch_value(
            owner,
            "INSERT INTO projects (workspace_id, name, deleting_at) VALUES (%s, 'going', now())"
            " RETURNING id",
            (world.a.id,),
        )
    async with acting_as(conn, "authenticated", world.a.user_id):
        with pytest.raises(errors.CheckViolation, match="being deleted"):
            await conn.execute(
                "INSERT INTO image_generations (project_id, prompt, user_id) VALUES (%s, 'x', %s)",
                (project_id, world.a.user_id),
            )


async def test_members_cannot_write_api_keys_or_join_workspaces(conn: Conn, world: World) -> None:
    async with acting_as(conn, "authenticated", world.a.user_id):
        with pytest.raises(errors.InsufficientPrivilege, match="row-level security"):
            await conn.execute(
                "INSERT INTO api_keys (workspace_id, prefix, key_hash) VALUES (%s, 'ij_', 'x')",
                (world.a.id,),
            )
    async with acting_as(conn, "authenticated", world.a.user_id):
        with pytest.raises(errors.InsufficientPrivilege, match="row-level security"):
            await conn.execute(
                "INSERT INTO workspace_members (workspace_id, user_id) VALUES (%s, %s)",
                (world.b.id, world.a.user_id),
            )
    async with acting_as(conn, "authenticated", world.a.user_id):
        assert (
            await _rowcount(
                conn,
                "UPDATE workspace_members SET role = 'owner' WHERE user_id = %s",
                (world.a.user_id,),
            )
            == 0
        )
        assert await _rowcount(conn, "UPDATE api_keys SET revoked_at = now()") == 0


@pytest.mark.parametrize("table", MEMBER_TABLES)
async def test_members_cannot_update_or_delete_read_only_rows(
    conn: Conn, world: World, table: str
) -> None:
    column = {"projects": "name", "image_events": "message", "workflow_nodes": "node_type"}
    async with acting_as(conn, "authenticated", world.a.user_id):
        if table in column:
            statement = sql.SQL("UPDATE {} SET {} = 'changed'").format(
                _table(table), sql.Identifier(column[table])
            )
            assert (await conn.execute(statement)).rowcount == 0
        assert (await conn.execute(sql.SQL("DELETE FROM {}").format(_table(table)))).rowcount == 0
    async with acting_as(conn, "service_role"):
        assert await _workspaces_seen(conn, table) >= {world.a.id, world.b.id}


async def test_a_member_inserts_a_generation_with_plain_sql_and_it_is_enqueued(
    conn: Conn, world: World
) -> None:
    async with acting_as(conn, "authenticated", world.a.user_id):
        cur = await conn.execute(
            "INSERT INTO image_generations (project_id, prompt, webhook_url)"
            " VALUES (%s, 'a red fox', 'https://hooks.example.com/x') RETURNING id, job_id, user_id, workspace_id",
            (world.a.project_id,),
        )
        row = await cur.fetchone()
        assert row is not None
        generation_id, job_id, user_id, workspace_id = row
        assert (user_id, workspace_id) == (world.a.user_id, world.a.id)
        assert job_id is not None
        assert await _count(conn, "procrastinate_jobs") == 0  # enqueued, yet not theirs to see
        events = await conn.execute(
            "SELECT status FROM image_events WHERE generation_id = %s", (generation_id,)
        )
        assert [r[0] for r in await events.fetchall()] == ["pending"]
        await conn.execute("RESET ROLE")
        job = await conn.execute(
            "SELECT status, task_name, args FROM procrastinate_jobs WHERE id = %s", (job_id,)
        )
        assert await job.fetchone() == (
            "todo",
            "generate_image",
            {"generation_id": str(generation_id)},
        )
        counters = await conn.execute(
            "SELECT pending_count, image_count FROM projects WHERE id = %s", (world.a.project_id,)
        )
        assert await counters.fetchone() == (2, 2)


async def test_a_member_cannot_insert_into_another_workspace(conn: Conn, world: World) -> None:
    attempts: list[tuple[dict[str, Any], type[Exception]]] = [
        ({"project_id": world.b.project_id}, errors.InsufficientPrivilege),
        (
            {"project_id": world.b.project_id, "user_id": world.b.user_id},
            errors.InsufficientPrivilege,
        ),
        ({"project_id": world.a.project_id, "workspace_id": world.b.id}, errors.CheckViolation),
        (
            {"project_id": world.a.project_id, "user_id": world.b.user_id},
            errors.InsufficientPrivilege,
        ),
    ]
    for columns, error in attempts:
        async with acting_as(conn, "authenticated", world.a.user_id):
            with pytest.raises(error):
                await insert_generation(conn, columns.pop("project_id"), **columns)
    async with acting_as(conn, "anon"):
        with pytest.raises(errors.InsufficientPrivilege):
            await insert_generation(conn, world.a.project_id)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("status", "completed"),
        ("result_image_url", "https://cdn.example.com/forged.png"),
        ("job_id", 1),
        ("provider_job_id", "someone-elses-job"),
        ("attempts", 3),
        # What the worker acts on for an edit (issue 12): never a client's to set.
        ("edit_mode", "add"),
        ("mask_url", "https://attacker.example.com/mask.png"),
    ],
)
async def test_lifecycle_columns_are_not_a_members_to_write(
    conn: Conn, world: World, column: str, value: Any
) -> None:
    async with acting_as(conn, "authenticated", world.a.user_id):
        with pytest.raises(errors.InsufficientPrivilege, match="permission denied"):
            await insert_generation(conn, world.a.project_id, **{column: value})
    if column == "status":
        return  # members may update status, to cancel only: see the tests below
    async with acting_as(conn, "authenticated", world.a.user_id):
        with pytest.raises(errors.InsufficientPrivilege, match="permission denied"):
            await conn.execute(
                sql.SQL("UPDATE image_generations SET {} = %s WHERE id = %s").format(
                    sql.Identifier(column)
                ),
                (value, world.a.generation_id),
            )


async def test_a_member_cancels_a_generation_of_their_workspace_only(
    conn: Conn, world: World
) -> None:
    async with acting_as(conn, "authenticated", world.a.user_id):
        other = await _rowcount(
            conn,
            "UPDATE image_generations SET status = 'cancelled' WHERE id = %s",
            (world.b.generation_id,),
        )
        assert other == 0
        own = await _rowcount(
            conn,
            "UPDATE image_generations SET status = 'cancelled' WHERE id = %s",
            (world.a.generation_id,),
        )
        assert own == 1
        await conn.execute("RESET ROLE")
        cur = await conn.execute(
            "SELECT g.status, g.error_code, j.status FROM image_generations g"
            " JOIN procrastinate_jobs j ON j.id = g.job_id WHERE g.id = %s",
            (world.a.generation_id,),
        )
        assert await cur.fetchone() == ("cancelled", "cancelled", "cancelled")
        cur = await conn.execute(
            "SELECT status FROM image_generations WHERE id = %s", (world.b.generation_id,)
        )
        assert await cur.fetchone() == ("pending",)


async def test_a_member_cannot_set_any_other_status(conn: Conn, world: World) -> None:
    async with acting_as(conn, "authenticated", world.a.user_id):
        with pytest.raises(errors.InsufficientPrivilege, match="row-level security"):
            await conn.execute(
                "UPDATE image_generations SET status = 'processing' WHERE id = %s",
                (world.a.generation_id,),
            )
    async with acting_as(conn, "authenticated", world.a.user_id):
        assert (
            await _rowcount(
                conn, "DELETE FROM image_generations WHERE id = %s", (world.a.generation_id,)
            )
            == 0
        )


async def test_every_table_has_row_level_security(conn: Conn) -> None:
    cur = await conn.execute(
        "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace"
        " AND relkind IN ('r', 'p') AND NOT relrowsecurity ORDER BY 1"
    )
    assert await cur.fetchall() == []


async def test_trigger_functions_run_as_their_owner_with_a_fixed_search_path(conn: Conn) -> None:
    cur = await conn.execute(
        "SELECT DISTINCT p.proname, p.prosecdef, p.proconfig FROM pg_trigger t"
        " JOIN pg_proc p ON p.oid = t.tgfoid"
        " WHERE NOT t.tgisinternal AND p.proname LIKE 'imagejobs%%' ORDER BY 1"
    )
    rows = await cur.fetchall()
    assert len(rows) >= 8
    assert [r for r in rows if not (r[1] and r[2] == ["search_path=public, pg_temp"])] == []


async def test_a_later_migration_replacing_a_trigger_function_is_secured_again(
    world: World,
) -> None:
    async with await psycopg.AsyncConnection.connect(world.url, autocommit=True) as conn:
        # What a later migration does when it changes a trigger: CREATE OR REPLACE, which
        # drops SECURITY DEFINER.
        cur = await conn.execute(
            "SELECT pg_get_functiondef('imagejobs_generations_count()'::regprocedure)"
        )
        row = await cur.fetchone()
        assert row is not None
        definition = str(row[0])
        await conn.execute(
            definition.replace(" SECURITY DEFINER", "")
            .replace(" SET search_path TO 'public', 'pg_temp'", "")
            .encode()
        )
        secured = "SELECT prosecdef FROM pg_proc WHERE oid = 'imagejobs_generations_count()'::regprocedure"
        assert await fetch_value(conn, secured) is False
        assert await migrate(world.url) == []
        assert await fetch_value(conn, secured) is True
