"""/v1/projects: create, list and read projects with their counters and status."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from litestar import Controller, Request, get, post
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, JSONBody, QueryParameter
from psycopg_pool import AsyncConnectionPool

from api.auth.keys import Principal
from api.deps import PoolDep
from api.pagination import check_limit, decode_cursor, page
from api.schemas import ProjectCreate, ProjectList
from worker.core import store
from worker.core.models import Project


async def fetch_project(
    pool: AsyncConnectionPool, project_id: UUID, workspace_id: UUID, *, deleting: bool = False
) -> Project:
    """The project; 404 when not there or (unless `deleting`) while a delete of it runs."""
    read = store.get_project_even_deleting if deleting else store.get_project
    project = await read(pool, project_id, workspace_id)
    if project is None:
        raise NotFoundException(f"project {project_id} not found")
    return project


class ProjectController(Controller):
    path = "/v1/projects"
    tags = ["projects"]

    @post("/", summary="Create a project")
    async def create_project(
        self, data: JSONBody[ProjectCreate], request: Request[Principal, Any, Any], pool: PoolDep
    ) -> Project:
        return await store.insert_project(pool, request.user.workspace_id, data.name)

    @get("/", summary="List projects, newest first")
    async def list_projects(
        self,
        request: Request[Principal, Any, Any],
        pool: PoolDep,
        limit: Annotated[int, QueryParameter(description="page size, 1-200")] = 50,
        cursor: Annotated[
            str | None, QueryParameter(description="next_cursor of the previous page")
        ] = None,
    ) -> ProjectList:
        check_limit(limit)
        cursor_ts, cursor_id = decode_cursor(cursor)
        rows = await store.list_projects(
            pool,
            request.user.workspace_id,
            cursor_ts=cursor_ts,
            cursor_id=cursor_id,
            limit=limit + 1,
        )
        data, next_cursor = page(rows, limit)
        return ProjectList(data=data, next_cursor=next_cursor)

    @get("/{project_id:uuid}", summary="A project with its counters and status")
    async def get_project(
        self, project_id: FromPath[UUID], request: Request[Principal, Any, Any], pool: PoolDep
    ) -> Project:
        return await fetch_project(pool, project_id, request.user.workspace_id)
