"""What a team does with a generation after creating it: cancel, retry, regenerate, edit, list
versions.

Each is one conditional UPDATE or INSERT: the triggers cancel or defer the jobs, so the same
works from psql (`UPDATE image_generations SET status = 'cancelled' ...`).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
import psycopg
from litestar import Controller, Request, Response, get, post
from litestar.exceptions import HTTPException
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_201_CREATED, HTTP_409_CONFLICT
from msgspec import Meta
from psycopg import errors
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from api.auth.keys import Principal
from api.deps import CatalogueDep, PoolDep, StorageDep
from api.limits import CreationRateLimit, TooManyRequests
from api.masks import decode_mask
from api.problems import InvalidField
from api.routes.generations import (
    check_provider,
    constraint_error,
    fetch_generation,
    over_quota,
)
from api.schemas import NO_NUL, GenerationList, Regenerate
from worker.core import store
from worker.core.models import Generation, StoredFile

MAX_EDIT_BODY = 12 * 1024 * 1024


class EditCreate(msgspec.Struct, forbid_unknown_fields=True):
    prompt: Annotated[str, Meta(min_length=1, max_length=4000, pattern=NO_NUL)]
    # data:image/png;base64,...: painted (opaque, non-black) pixels mark the area to change.
    mask: str | None = None
    mode: Literal["remove", "add"] = "add"


def conflict(detail: str) -> HTTPException:
    return HTTPException(status_code=HTTP_409_CONFLICT, detail=detail)


async def cancel_or_retry(
    pool: AsyncConnectionPool,
    verb: Literal["cancelled", "retried"],
    generation_id: UUID,
    principal: Principal,
) -> Generation:
    change = store.cancel_generation if verb == "cancelled" else store.retry_generation
    updated = await change(pool, generation_id, principal.workspace_id)
    if updated is None:
        current = await fetch_generation(pool, generation_id, principal.workspace_id)
        raise conflict(f"a {current.status} generation cannot be {verb}")
    return updated


class GenerationActions(Controller):
    path = "/v1/generations/{generation_id:uuid}"
    tags = ["generations"]

    @post("/cancel", summary="Cancel a pending or processing generation", status_code=200)
    async def cancel(
        self, generation_id: FromPath[UUID], request: Request[Principal, Any, Any], pool: PoolDep
    ) -> Generation:
        return await cancel_or_retry(pool, "cancelled", generation_id, request.user)

    @post(
        "/retry",
        summary="Run a failed, timed-out or cancelled generation again",
        description="Back to pending with a fresh attempt budget: the provider is called again. "
        "Not a new generation: it does not count against the workspace's generations_per_day.",
        status_code=200,
        middleware=[CreationRateLimit],
        raises=[TooManyRequests],
    )
    async def retry(
        self, generation_id: FromPath[UUID], request: Request[Principal, Any, Any], pool: PoolDep
    ) -> Generation:
        return await cancel_or_retry(pool, "retried", generation_id, request.user)

    @post(
        "/regenerate",
        summary="Make the next version of the generation's history, on the same node",
        description="Runs the generation again as a new version of the same root (optionally "
        "with a new `prompt`, `prompt_spec`, `provider` or `model`; what is left out is kept). "
        "On a canvas node it supersedes older pending or processing work there: those are "
        "cancelled, provider work included.",
        status_code=HTTP_201_CREATED,
        middleware=[CreationRateLimit],
        raises=[TooManyRequests],
    )
    async def regenerate(
        self,
        generation_id: FromPath[UUID],
        request: Request[Principal, Any, Any],
        pool: PoolDep,
        catalogue: CatalogueDep,
        data: JSONBody[Regenerate | None] = None,
    ) -> Response[Generation]:
        changes = data or Regenerate()
        if changes.provider is not None:
            await check_provider(catalogue, changes.provider)
        principal = request.user
        spec = msgspec.to_builtins(changes.prompt_spec) if changes.prompt_spec else None
        if spec is not None and changes.prompt is None and not spec.get("base_prompt"):
            raise InvalidField("prompt", "a new prompt_spec needs a base_prompt or a prompt")
        params = {
            "id": generation_id,
            "workspace_id": principal.workspace_id,
            "user_id": principal.user_id,
            "prompt": changes.prompt,
            "prompt_spec": None if spec is None else Jsonb(spec),
            "provider": changes.provider,
            "model": changes.model,
        }
        try:
            created = await store.insert_regeneration(pool, params)
        except (errors.IntegrityError, errors.DataError) as exc:
            raise constraint_error(exc) from exc
        except psycopg.DatabaseError as exc:
            raise await over_quota(exc, pool, principal.workspace_id) from exc
        if created is None:
            await fetch_generation(pool, generation_id, principal.workspace_id)
            raise conflict("the generation changed while it was being regenerated")
        return Response(
            created,
            status_code=HTTP_201_CREATED,
            headers={"Location": f"/v1/generations/{created.id}"},
        )

    @get("/versions", summary="The edit history the generation belongs to, oldest first")
    async def versions(
        self, generation_id: FromPath[UUID], request: Request[Principal, Any, Any], pool: PoolDep
    ) -> GenerationList:
        rows = await store.list_versions(pool, generation_id, request.user.workspace_id)
        if not rows:
            await fetch_generation(pool, generation_id, request.user.workspace_id)
        return GenerationList(data=rows, next_cursor=None)

    @post(
        "/edits",
        summary="Edit (inpaint) a completed generation into a new version",
        status_code=HTTP_201_CREATED,
        request_max_body_size=MAX_EDIT_BODY,
        middleware=[CreationRateLimit],
        raises=[TooManyRequests],
    )
    async def edit(
        self,
        generation_id: FromPath[UUID],
        data: JSONBody[EditCreate],
        request: Request[Principal, Any, Any],
        pool: PoolDep,
        storage: StorageDep,
    ) -> Response[Generation]:
        principal = request.user
        mask = decode_mask(data.mask)
        source = await fetch_generation(pool, generation_id, principal.workspace_id)
        if source.status != "completed" or not source.result_image_url:
            raise conflict(
                f"only a completed generation can be edited (this one is {source.status})"
            )
        metadata = {
            "editedFrom": str(source.id),
            "editedAt": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "editMode": data.mode,
        }
        try:
            async with store.transaction(pool) as conn:
                created = await store.insert_edit(
                    conn,
                    {
                        "id": source.id,
                        "workspace_id": principal.workspace_id,
                        "user_id": principal.user_id,
                        "prompt": data.prompt,
                        "metadata": Jsonb(metadata),
                        "edit_mode": data.mode,
                    },
                )
                if created is None:
                    raise conflict("the generation changed while the edit was being created")
                key = f"{created.workspace_id}/{created.project_id}/{created.id}-mask-{uuid.uuid4().hex[:8]}.png"
                mask_url = await storage.put(key, mask, "image/png")
                created = await store.set_mask(conn, created.id, StoredFile(key, mask_url))
        except psycopg.DatabaseError as exc:
            raise await over_quota(exc, pool, principal.workspace_id) from exc
        assert created is not None
        return Response(
            created,
            status_code=HTTP_201_CREATED,
            headers={"Location": f"/v1/generations/{created.id}"},
        )
