"""A row inserted with plain SQL is a complete generation: its job, workspace, prompt, model."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg import errors
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from tests.sql.helpers import (
    Conn,
    fetch_value,
    generation,
    insert_generation,
    job,
    project_counters,
)


async def jobs_of(conn: Conn, generation_id: uuid.UUID) -> int:
    return int(
        await fetch_value(
            conn,
            "SELECT count(*) FROM procrastinate_jobs WHERE args->>'generation_id' = %s",
            (str(generation_id),),
        )
    )


async def test_plain_insert_defers_its_job_in_the_same_transaction(
    conn: Conn, pool: AsyncConnectionPool, project_id: uuid.UUID
) -> None:
    async with pool.connection() as observer:
        async with conn.transaction():
            await insert_generation(conn, project_id, prompt="a red fox")
            row = await (
                await conn.execute(
                    "SELECT id, job_id FROM image_generations WHERE project_id = %s", (project_id,)
                )
            ).fetchone()
            assert row is not None
            generation_id, job_id = uuid.UUID(str(row[0])), row[1]
            assert job_id is not None
            queued = await job(conn, job_id)
            # Nobody else sees the job before the insert commits: it is part of the transaction.
            assert await jobs_of(observer, generation_id) == 0
        assert await jobs_of(observer, generation_id) == 1
    assert queued["task_name"] == "generate_image"
    assert queued["queue_name"] == "images"
    assert queued["lock"] == f"generation:{generation_id}"
    assert queued["args"] == {"generation_id": str(generation_id)}
    assert queued["status"] == "todo"
    row_after = await generation(conn, generation_id)
    assert (row_after["status"], row_after["step"], row_after["progress"]) == (
        "pending",
        "queued",
        0,
    )


async def test_rolled_back_insert_leaves_no_job(conn: Conn, project_id: uuid.UUID) -> None:
    before = await project_counters(conn, project_id)
    async with conn.transaction() as tx:
        generation_id = await insert_generation(conn, project_id)
        job_id = (await generation(conn, generation_id))["job_id"]
        assert job_id is not None and await jobs_of(conn, generation_id) == 1
        raise psycopg.Rollback(tx)
    assert await jobs_of(conn, generation_id) == 0
    assert (
        await fetch_value(conn, "SELECT count(*) FROM procrastinate_jobs WHERE id = %s", (job_id,))
        == 0
    )
    assert (
        await fetch_value(
            conn, "SELECT count(*) FROM image_events WHERE generation_id = %s", (generation_id,)
        )
        == 0
    )
    assert await project_counters(conn, project_id) == before


async def test_workspace_is_taken_from_the_project(
    conn: Conn, project_id: uuid.UUID, workspace_id: uuid.UUID
) -> None:
    generation_id = await insert_generation(conn, project_id)
    assert (await generation(conn, generation_id))["workspace_id"] == workspace_id
    same = await insert_generation(conn, project_id, workspace_id=workspace_id)
    assert (await generation(conn, same))["workspace_id"] == workspace_id


async def test_mismatching_workspace_is_rejected(conn: Conn, project_id: uuid.UUID) -> None:
    before = await project_counters(conn, project_id)
    with pytest.raises(errors.CheckViolation, match="workspace"):
        await insert_generation(conn, project_id, workspace_id=uuid.uuid4())
    assert await project_counters(conn, project_id) == before


async def test_unknown_project_is_rejected(conn: Conn) -> None:
    with pytest.raises(errors.ForeignKeyViolation):
        await insert_generation(conn, uuid.uuid4())


@pytest.mark.parametrize(
    ("spec", "prompt"),
    [
        ({"base_prompt": "a red fox"}, "a red fox"),
        (
            {"base_prompt": "  a red fox ", "style_modifiers": ["watercolor", " soft light ", ""]},
            "a red fox, watercolor, soft light",
        ),
        ({"base_prompt": "a red fox", "style_modifiers": [], "size": "1024x1024"}, "a red fox"),
        ({"base_prompt": "a red fox", "style_modifiers": "not a list"}, "a red fox"),
    ],
)
async def test_prompt_is_composed_from_prompt_spec(
    conn: Conn, project_id: uuid.UUID, spec: dict[str, object], prompt: str
) -> None:
    generation_id = await insert_generation(conn, project_id, prompt=None, prompt_spec=Jsonb(spec))
    row = await generation(conn, generation_id)
    assert row["prompt"] == prompt
    assert row["prompt_spec"] == spec


async def test_an_explicit_prompt_wins_over_prompt_spec(conn: Conn, project_id: uuid.UUID) -> None:
    spec = {"base_prompt": "ignored", "style_modifiers": ["oil"]}
    generation_id = await insert_generation(
        conn, project_id, prompt="a blue heron", prompt_spec=Jsonb(spec)
    )
    assert (await generation(conn, generation_id))["prompt"] == "a blue heron"


async def test_no_prompt_at_all_is_rejected(conn: Conn, project_id: uuid.UUID) -> None:
    with pytest.raises(errors.NotNullViolation):
        await insert_generation(
            conn, project_id, prompt=None, prompt_spec=Jsonb({"style_modifiers": ["  "]})
        )


@pytest.mark.parametrize("provider", ["local", "openai", "google", "fal", "stability"])
async def test_model_defaults_come_from_the_catalogue(
    conn: Conn, project_id: uuid.UUID, provider: str
) -> None:
    cur = await conn.execute(
        "SELECT model, status FROM models WHERE provider = %s AND is_default", (provider,)
    )
    default = await cur.fetchone()
    assert default is not None and default[1] == "active"
    generation_id = await insert_generation(conn, project_id, provider=provider)
    row = await generation(conn, generation_id)
    assert row["model"] == default[0]
    assert row["metadata"] == {"model": f"{provider}:{default[0]}"}


async def test_changing_the_catalogue_default_changes_what_sql_inserts_get(
    conn: Conn, project_id: uuid.UUID
) -> None:
    async with conn.transaction(force_rollback=True):
        await conn.execute("UPDATE models SET is_default = false WHERE provider = 'openai'")
        await conn.execute(
            "UPDATE models SET is_default = true WHERE provider = 'openai' AND model = 'gpt-image-2'"
        )
        generation_id = await insert_generation(conn, project_id, provider="openai")
        assert (await generation(conn, generation_id))["model"] == "gpt-image-2"


async def test_a_shut_down_model_is_refused_naming_its_replacement(
    conn: Conn, project_id: uuid.UUID
) -> None:
    with pytest.raises(errors.CheckViolation) as exc:
        await insert_generation(conn, project_id, provider="openai", model="dall-e-3")
    assert exc.value.diag.column_name == "model"
    assert "shut down on 2026-05-12; use gpt-image-2.6-sunburst instead" in str(exc.value)
    # A record of finished work may still name it (imports, history).
    await insert_generation(
        conn, project_id, provider="openai", model="dall-e-3", status="completed"
    )


async def test_a_deprecated_model_is_accepted_with_a_logged_warning(
    conn: Conn, project_id: uuid.UUID
) -> None:
    generation_id = await insert_generation(
        conn, project_id, provider="google", model="gemini-3.1-flash-image"
    )
    cur = await conn.execute(
        "SELECT kind, message, data FROM image_events WHERE generation_id = %s ORDER BY id",
        (generation_id,),
    )
    events = await cur.fetchall()
    assert [e[0] for e in events] == ["status", "log"]
    assert "deprecated" in events[1][1] and "gemini-nano-banana-2.1" in events[1][1]
    assert events[1][2]["replacement"] == "gemini-nano-banana-2.1"


async def test_a_model_the_catalogue_does_not_know_is_tried(
    conn: Conn, project_id: uuid.UUID
) -> None:
    generation_id = await insert_generation(
        conn, project_id, provider="openai", model="gpt-image-9-preview"
    )
    row = await generation(conn, generation_id)
    assert (row["model"], row["status"]) == ("gpt-image-9-preview", "pending")


async def test_explicit_model_and_metadata_are_kept(conn: Conn, project_id: uuid.UUID) -> None:
    generation_id = await insert_generation(
        conn,
        project_id,
        provider="openai",
        model="gpt-image-2",
        metadata=Jsonb({"source": "psql"}),
    )
    row = await generation(conn, generation_id)
    assert row["model"] == "gpt-image-2"
    assert row["metadata"] == {"source": "psql", "model": "openai:gpt-image-2"}
    preset = await insert_generation(
        conn, project_id, provider="fal", metadata=Jsonb({"model": "custom"})
    )
    assert (await generation(conn, preset))["metadata"] == {"model": "custom"}


async def test_an_edit_is_deferred_as_edit_image(conn: Conn, project_id: uuid.UUID) -> None:
    generation_id = await insert_generation(conn, project_id, edit_mode="remove")
    queued = await job(conn, (await generation(conn, generation_id))["job_id"])
    assert queued["task_name"] == "edit_image"
    assert queued["args"] == {"generation_id": str(generation_id)}


async def test_client_metadata_does_not_choose_the_task(conn: Conn, project_id: uuid.UUID) -> None:
    """`metadata` is the client's: an editMode or maskUrl in it makes no edit."""
    generation_id = await insert_generation(
        conn,
        project_id,
        metadata=Jsonb({"editMode": "add", "maskUrl": "https://attacker.example/m.png"}),
    )
    row = await generation(conn, generation_id)
    assert (row["edit_mode"], row["mask_url"]) == (None, None)
    assert (await job(conn, row["job_id"]))["task_name"] == "generate_image"
