"""/v1/projects: create, list and read projects with their counters and status."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from litestar import Controller, Request, get, post
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, JSONBody, QueryParameter
from psycopg.rows import class_row
from psycopg_pool import AsyncConnectionPool

from api.auth.keys import Principal
from api.deps import PoolDep
from api.pagination import check_limit, decode_cursor, page
from api.schemas import ProjectCreate, ProjectList
from worker.core.models import Project
from worker.core.sqlfiles import query


async def fetch_project(pool: AsyncConnectionPool, project_id: UUID, workspace_id: UUID) -> Project:
    async with pool.connection() as conn:
        cur = conn.cursor(row_factory=class_row(Project))
        await cur.execute(query("get_project"), {"id": project_id, "workspace_id": workspace_id})
        project: Project | None = await cur.fetchone()
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
        async with pool.connection() as conn:
            cur = conn.cursor(row_factory=class_row(Project))
            await cur.execute(
                query("insert_project"),
                {"workspace_id": request.user.workspace_id, "name": data.name},
            )
            project: Project | None = await cur.fetchone()
        assert project is not None
        return project

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
        async with pool.connection() as conn:
            cur = conn.cursor(row_factory=class_row(Project))
            await cur.execute(
                query("list_projects"),
                {
                    "workspace_id": request.user.workspace_id,
                    "cursor_ts": cursor_ts,
                    "cursor_id": cursor_id,
                    "limit": limit + 1,
                },
            )
            rows = await cur.fetchall()
        data, next_cursor = page(rows, limit)
        return ProjectList(data=data, next_cursor=next_cursor)

    @get("/{project_id:uuid}", summary="A project with its counters and status")
    async def get_project(
        self, project_id: FromPath[UUID], request: Request[Principal, Any, Any], pool: PoolDep
    ) -> Project:
        return await fetch_project(pool, project_id, request.user.workspace_id)
