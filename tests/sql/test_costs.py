"""generation_costs: the view's totals match a hand-built set of generations and the seeded prices."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from psycopg.types.json import Jsonb

from tests.sql.helpers import Conn, fetch_dict, insert_generation, walk_to


async def add(
    conn: Conn, project_id: uuid.UUID, workspace_id: uuid.UUID, status: str, **cols: Any
) -> None:
    spec = cols.pop("spec", {})
    gid = await insert_generation(
        conn, project_id, workspace_id=workspace_id, prompt_spec=Jsonb(spec), **cols
    )
    await walk_to(conn, gid, status)


async def costs(conn: Conn, workspace_id: uuid.UUID, provider: str, model: str) -> dict[str, Any]:
    return await fetch_dict(
        conn,
        "SELECT generations, completed, failed, estimated_cost_usd, unpriced FROM generation_costs"
        " WHERE workspace_id = %s AND provider = %s AND model = %s",
        (workspace_id, provider, model),
    )


async def test_costs_by_model_size_and_quality(
    conn: Conn, project_id: uuid.UUID, workspace_id: uuid.UUID
) -> None:
    # Priced as gpt-image-1 was while it ran (the catalogue refuses new work for it now).
    async with conn.transaction(force_rollback=True):
        await conn.execute(
            "UPDATE models SET status = 'active' WHERE provider = 'openai' AND model = 'gpt-image-1'"
        )
        oa = ("openai", "gpt-image-1")
        await add(
            conn,
            project_id,
            workspace_id,
            "completed",
            provider=oa[0],
            model=oa[1],
            spec={"size": "1024x1024", "quality": "high"},
        )
        await add(
            conn,
            project_id,
            workspace_id,
            "completed",
            provider=oa[0],
            model=oa[1],
            spec={"size": "1536x1024", "quality": "low"},
        )
        # No size or quality: the model's wildcard row (medium, 1024x1024).
        await add(conn, project_id, workspace_id, "completed", provider=oa[0], model=oa[1])
        await add(
            conn,
            project_id,
            workspace_id,
            "failed",
            provider=oa[0],
            model=oa[1],
            spec={"size": "1024x1024", "quality": "high"},
        )
        await add(conn, project_id, workspace_id, "pending", provider=oa[0], model=oa[1])

        row = await costs(conn, workspace_id, *oa)
        assert (row["generations"], row["completed"], row["failed"]) == (5, 3, 1)
        assert row["estimated_cost_usd"] == Decimal("0.167") + Decimal("0.016") + Decimal("0.042")
        assert row["unpriced"] == 0


async def test_fal_is_charged_per_megapixel(
    conn: Conn, project_id: uuid.UUID, workspace_id: uuid.UUID
) -> None:
    model = "fal-ai/flux/dev"
    await add(
        conn,
        project_id,
        workspace_id,
        "completed",
        provider="fal",
        model=model,
        spec={"size": "2000x1000"},
    )
    await add(conn, project_id, workspace_id, "completed", provider="fal", model=model)
    row = await costs(conn, workspace_id, "fal", model)
    # 2.0 MP and the 1024x1024 default (1.048576 MP) at $0.025 per MP.
    expected = Decimal("0.025") * 2 + (Decimal("0.025") * 1024 * 1024 / 1_000_000).quantize(
        Decimal("0.000001")
    )
    assert row["estimated_cost_usd"] == expected


async def test_local_is_free_and_unknown_models_are_flagged(
    conn: Conn, project_id: uuid.UUID, workspace_id: uuid.UUID
) -> None:
    await add(conn, project_id, workspace_id, "completed", provider="local", model="local-pillow")
    local = await costs(conn, workspace_id, "local", "local-pillow")
    assert (local["completed"], local["estimated_cost_usd"]) == (1, 0)

    await add(conn, project_id, workspace_id, "completed", provider="google", model="no-such-model")
    unknown = await costs(conn, workspace_id, "google", "no-such-model")
    assert unknown["estimated_cost_usd"] is None
    assert unknown["unpriced"] == 1
