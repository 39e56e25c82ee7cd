"""Deletes: a generation (or its whole history) with its files, a project with everything in it
(a background job), and the audit record of each (`GET /v1/deletions/{id}`).

The order that keeps files and rows consistent, and why, is in worker/storage/deletes.py. Every
answer is idempotent: a repeated delete answers 404 (generation) or the running delete (project),
never a 500; a delete that storage refused answers 503 and keeps the row, so repeating it finishes.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal
from uuid import UUID

from litestar import Controller, Request, Response, delete, get
from litestar.exceptions import HTTPException, NotFoundException
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, QueryParameter
from litestar.status_codes import HTTP_202_ACCEPTED, HTTP_503_SERVICE_UNAVAILABLE

from api.auth.keys import Principal
from api.deps import PoolDep, StorageDep
from worker.core import store
from worker.core.models import Deletion
from worker.storage import deletes

logger = logging.getLogger(__name__)
RETRY_AFTER_S = 5


def deleted_by(principal: Principal) -> str:
    """Who asks, for the audit trail: the API key or the Supabase user."""
    if principal.user_id is not None:
        return f"user:{principal.user_id}"
    if principal.key_id is not None:
        return f"api_key:{principal.key_id}"
    return "unknown"


def unavailable(detail: str) -> HTTPException:
    return HTTPException(
        status_code=HTTP_503_SERVICE_UNAVAILABLE,
        detail=detail,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


class GenerationDelete(Controller):
    path = "/v1/generations"
    tags = ["generations"]

    @delete(
        "/{generation_id:uuid}",
        summary="Delete a generation, its files and its node's image",
        description="Removes the generation (with `cascade=versions`, every version of its "
        "history), its stored result, thumbnail and mask, and its canvas node's image. A "
        "pending or processing one is cancelled first and no result lands after. Without "
        "cascade, deleting a history's root makes its next version the root. 204 when "
        "deleted; 404 when not there (a repeated delete); 503 when storage refused to remove "
        "a file or a job is still stopping: the generation is kept (cancelled) and repeating "
        "the request finishes the delete.",
        status_code=204,
    )
    async def delete_generation(
        self,
        generation_id: FromPath[UUID],
        request: Request[Principal, Any, Any],
        pool: PoolDep,
        storage: StorageDep,
        cascade: Annotated[
            Literal["versions"] | None,
            QueryParameter(description="`versions`: the whole edit history"),
        ] = None,
    ) -> None:
        principal = request.user
        try:
            deleted = await deletes.delete_generation(
                pool,
                storage,
                principal.workspace_id,
                generation_id,
                deleted_by(principal),
                cascade=cascade == "versions",
            )
        except OSError as exc:
            logger.warning("delete of generation %s: storage failed (%s)", generation_id, exc)
            raise unavailable(
                "storage could not remove the generation's files; it is kept, repeat the delete"
            ) from exc
        except deletes.StillRunning as exc:
            raise unavailable(f"{exc}; repeat the delete shortly") from exc
        if deleted is None:
            raise NotFoundException(f"generation {generation_id} not found")


class ProjectDelete(Controller):
    path = "/v1/projects"
    tags = ["projects"]

    @delete(
        "/{project_id:uuid}",
        summary="Delete a project and everything in it (in the background)",
        description="Hides the project at once (it takes no new generations) and deletes its "
        "generations and their files in batches in a background job; its stream "
        "(`GET /v1/projects/{id}/events`) shows the counters going down and a `deletion` "
        "progress object, then `deleted: true`. Answers 202 with the delete "
        "(`Location: /v1/deletions/{id}` to poll); a repeat while it runs answers the same "
        "(and restarts a job that gave up); once the project is gone, 404.",
        status_code=HTTP_202_ACCEPTED,
        responses={
            HTTP_202_ACCEPTED: ResponseSpec(
                data_container=Deletion, description="The delete, running (poll its Location)"
            )
        },
    )
    async def delete_project(
        self, project_id: FromPath[UUID], request: Request[Principal, Any, Any], pool: PoolDep
    ) -> Response[Deletion]:
        principal = request.user
        deletion = await store.start_project_deletion(
            pool, project_id, principal.workspace_id, deleted_by(principal)
        ) or await store.resume_project_deletion(pool, project_id, principal.workspace_id)
        if deletion is None:
            raise NotFoundException(f"project {project_id} not found")
        return Response(
            deletion,
            status_code=HTTP_202_ACCEPTED,
            headers={"Location": f"/v1/deletions/{deletion.id}"},
        )


class DeletionController(Controller):
    path = "/v1/deletions"
    tags = ["projects"]

    @get("/{deletion_id:int}", summary="A delete: who asked, when, what went, how far it is")
    async def get_deletion(
        self, deletion_id: FromPath[int], request: Request[Principal, Any, Any], pool: PoolDep
    ) -> Deletion:
        if not 0 < deletion_id < 2**63:
            raise NotFoundException(f"deletion {deletion_id} not found")
        deletion = await store.get_deletion(pool, deletion_id, request.user.workspace_id)
        if deletion is None:
            raise NotFoundException(f"deletion {deletion_id} not found")
        return deletion
