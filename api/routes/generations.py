"""/v1/generations: create (idempotently), read and list generations.

Creating one is a single INSERT: the database trigger defers its job in the same transaction, so
the API and a person with psql take exactly the same path.
"""

from __future__ import annotations

from datetime import UTC, datetime, time
from email.utils import format_datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec
import psycopg
from litestar import Controller, Request, Response, get, post
from litestar.exceptions import NotFoundException
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, FromQuery, HeaderParameter, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED
from psycopg import errors
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from api.auth.keys import Principal
from api.batches import create_batch, variations
from api.deps import CatalogueDep, HubDep, PoolDep, SettingsDep
from api.limits import CreationRateLimit, QuotaExceeded, TooManyRequests
from api.pagination import check_limit, decode_cursor, page
from api.preferences import MAX_WAIT_S, parse_cancel_after, parse_prefer
from api.problems import InvalidField
from api.schemas import (
    MAX_RUN_AHEAD,
    BatchCreate,
    CreatedGenerations,
    GenerationCreate,
    GenerationList,
    metadata_problem,
    priority_level,
)
from api.streams.hub import Hub
from api.streams.wait import generation_when_done, generations_when_done
from worker.core import store
from worker.core.catalogue import REFUSED_PROVIDERS, Catalogue
from worker.core.config import Settings
from worker.core.models import Generation, Status
from worker.core.netguard import OutboundPolicy, OutboundRefused
from worker.core.quotas import quota_limit, workspace_usage

MAX_BATCH_BODY = 8 * 1024 * 1024


async def fetch_generation(
    pool: AsyncConnectionPool, generation_id: UUID, workspace_id: UUID
) -> Generation:
    generation = await store.get_generation(pool, generation_id, workspace_id)
    if generation is None:
        raise NotFoundException(f"generation {generation_id} not found")
    return generation


def insert_params(
    data: GenerationCreate,
    principal: Principal,
    idempotency_key: str | None,
    default_priority: str = "interactive",
) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if data.prompt_spec is not None:
        spec = msgspec.to_builtins(data.prompt_spec)
    return {
        "workspace_id": principal.workspace_id,
        "user_id": principal.user_id,
        "project_id": data.project_id,
        "prompt": data.prompt,
        "prompt_spec": Jsonb(spec),
        "provider": data.provider,
        "model": data.model or "",
        "original_image_url": data.original_image_url,
        "node_id": data.node_id,
        "workflow_id": data.workflow_id,
        "webhook_url": data.webhook_url,
        "webhook_events_filter": data.webhook_events_filter,
        "idempotency_key": idempotency_key,
        "metadata": Jsonb(data.metadata),
        "priority": priority_level(data.priority, default_priority),
        "batch_id": None,
        "batch_index": None,
        "run_at": data.run_at,
        "deadline_s": data.deadline_s,
    }


def refuse_unsafe_urls(data: GenerationCreate, policy: OutboundPolicy) -> None:
    """The SSRF checks that need no DNS (scheme, literal IP), answered at once as a 422; the
    worker checks the resolved addresses again before it connects."""
    for field, url in (
        ("original_image_url", data.original_image_url),
        ("webhook_url", data.webhook_url),
    ):
        if url is None:
            continue
        try:
            policy.check_url(url)
        except OutboundRefused as exc:
            raise InvalidField(field, str(exc)) from exc


async def check_request(
    data: GenerationCreate, catalogue: Catalogue, settings: Settings, prefix: str = ""
) -> None:
    """What a creation is checked for before the database sees it; field names get `prefix`
    (`items[3].`) inside a batch."""
    try:
        if data.prompt is None and (data.prompt_spec is None or not data.prompt_spec.base_prompt):
            raise InvalidField("prompt", "either prompt or prompt_spec.base_prompt is required")
        await check_provider(catalogue, data.provider)
        refuse_unsafe_urls(data, OutboundPolicy.from_settings(settings))
        if problem := metadata_problem(data.metadata):
            raise InvalidField(*problem)
        if data.run_at is not None and data.run_at > datetime.now(UTC) + MAX_RUN_AHEAD:
            raise InvalidField("run_at", "at most 90 days ahead")
    except InvalidField as exc:
        if not prefix:
            raise
        error = exc.field_error
        raise InvalidField(f"{prefix}{error.field}", error.message, exc.code) from exc


async def check_provider(catalogue: Catalogue, provider: str) -> None:
    """Providers come from the catalogue; a few we deliberately do not offer say why."""
    if provider in REFUSED_PROVIDERS:
        raise InvalidField("provider", REFUSED_PROVIDERS[provider])
    known = await catalogue.providers()
    if provider not in known:
        raise InvalidField("provider", f"unknown provider {provider!r}: one of {', '.join(known)}")


async def deprecation_headers(catalogue: Catalogue, generation: Generation) -> dict[str, str]:
    """RFC 9745 `Deprecation` and RFC 8594 `Sunset` for a model the catalogue marks deprecated
    (the generation's trail also gets a log row, written by the insert trigger)."""
    entry = await catalogue.entry(generation.provider, generation.model)
    if entry is None or entry.status != "deprecated":
        return {}
    headers: dict[str, str] = {}
    since = entry.deprecated_on or datetime.now(UTC).date()
    headers["Deprecation"] = f"@{int(datetime.combine(since, time(), UTC).timestamp())}"
    if entry.shutdown_date is not None:
        sunset = datetime.combine(entry.shutdown_date, time(), UTC)
        headers["Sunset"] = format_datetime(sunset, usegmt=True)
    if entry.replacement:
        headers["Link"] = f'</v1/models>; rel="successor-version"; title="{entry.replacement}"'
    return headers


async def check_projects(
    pool: AsyncConnectionPool, principal: Principal, items: list[GenerationCreate]
) -> None:
    """Names the first item whose project is not the caller's (the database would only say
    that one of them is not)."""
    wanted = {item.project_id for item in items}
    mine = await store.projects_in_workspace(pool, list(wanted), principal.workspace_id)
    for index, item in enumerate(items):
        if item.project_id not in mine:
            raise InvalidField(f"items[{index}].project_id", "no such project in this workspace")


def constraint_error(exc: psycopg.Error, prefix: str = "") -> InvalidField:
    error = _constraint_error(exc)
    if not prefix:
        return error
    field = error.field_error
    return InvalidField(f"{prefix}{field.field}", field.message, error.code)


def _constraint_error(exc: psycopg.Error) -> InvalidField:
    diag = exc.diag
    if diag.constraint_name == "models_shutdown":
        return InvalidField("model", diag.message_primary or "the model was shut down")
    if diag.constraint_name == "image_generations_provider_fkey":
        return InvalidField("provider", "unknown provider")
    if isinstance(exc, errors.ForeignKeyViolation) or diag.column_name in (
        "project_id",
        "workspace_id",
    ):
        return InvalidField("project_id", "no such project in this workspace")
    if diag.constraint_name and "inline_images" in diag.constraint_name:
        return InvalidField("body", "image data is not accepted: upload the image and pass its URL")
    if diag.constraint_name and "urls_http" in diag.constraint_name:
        return InvalidField("body", "URLs must be http(s)://")
    return InvalidField(diag.column_name or "body", diag.message_primary or "invalid value")


async def over_quota(
    exc: psycopg.DatabaseError, pool: AsyncConnectionPool, workspace_id: UUID
) -> QuotaExceeded:
    """The 429 for an insert the quota trigger refused (SQLSTATE IJ429, sql/018), with the
    window's use as it stands now (read on a fresh connection: the refused one may be inside
    an aborted transaction); any other database error is raised again."""
    if (limit := quota_limit(exc)) is None:
        raise exc
    return QuotaExceeded(limit, await workspace_usage(pool, workspace_id))


class GenerationController(Controller):
    path = "/v1/generations"
    tags = ["generations"]

    @post(
        "/",
        summary="Create a generation",
        description="Queues an image generation. With an `Idempotency-Key` header, repeating the "
        "request returns the generation it first created (200) instead of creating another. With "
        f"`Prefer: wait=N` (N ≤ {MAX_WAIT_S}) the answer waits up to N seconds for the generation "
        "to finish: it is then the finished generation with `Preference-Applied: wait=N`, else "
        "the generation as it stands (no `Preference-Applied`); hanging up cancels only the wait. "
        "Over a workspace quota (`GET /v1/usage`): 429 `quota_exceeded` naming the limit, with "
        "`Retry-After` until the window resets.",
        status_code=HTTP_201_CREATED,
        middleware=[CreationRateLimit],
        raises=[TooManyRequests],
        responses={
            HTTP_200_OK: ResponseSpec(
                data_container=Generation | CreatedGenerations,  # type: ignore[arg-type]
                generate_examples=False,
                description="The generation (or, with `n`, the generations) an earlier request "
                "with the same Idempotency-Key created",
            )
        },
    )
    async def create_generation(
        self,
        data: JSONBody[GenerationCreate],
        request: Request[Principal, Any, Any],
        pool: PoolDep,
        settings: SettingsDep,
        catalogue: CatalogueDep,
        hub: HubDep,
        idempotency_key: Annotated[
            str | None, HeaderParameter(name="Idempotency-Key", max_length=255)
        ] = None,
        prefer: Annotated[
            str | None,
            HeaderParameter(
                name="Prefer",
                max_length=200,
                description=f"`wait=N`, N from 0 to {MAX_WAIT_S}: wait for the result",
            ),
        ] = None,
        cancel_after: Annotated[
            str | None,
            HeaderParameter(
                name="Cancel-After",
                max_length=40,
                description="a deadline such as `30s`, `5m`, `1h30m` (as `deadline_s`)",
            ),
        ] = None,
    ) -> Response[Generation | CreatedGenerations]:
        principal = request.user
        wait_s = parse_prefer(prefer)
        if (deadline := parse_cancel_after(cancel_after)) is not None:
            data = msgspec.structs.replace(
                data, deadline_s=min(deadline, data.deadline_s or deadline)
            )
        await check_request(data, catalogue, settings)
        if data.n is not None:
            return await self._variations(data, principal, pool, hub, idempotency_key, wait_s)
        params = insert_params(data, principal, idempotency_key)
        async with store.connection(pool) as conn:
            if idempotency_key is not None:
                existing = await store.get_generation_by_idempotency_key(
                    conn, principal.workspace_id, idempotency_key
                )
                if existing is not None:
                    done, headers = await generation_when_done(hub, pool, existing, wait_s)
                    return Response(done, status_code=HTTP_200_OK, headers=headers)
            try:
                created = await store.insert_generation(conn, params)
            except errors.UniqueViolation:
                # A concurrent request with the same key won the race; its row is the answer.
                assert idempotency_key is not None
                existing = await store.get_generation_by_idempotency_key(
                    conn, principal.workspace_id, idempotency_key
                )
                if existing is None:
                    raise
                return Response(existing, status_code=HTTP_200_OK)
            except (errors.IntegrityError, errors.DataError) as exc:
                raise constraint_error(exc) from exc
            except psycopg.DatabaseError as exc:
                raise await over_quota(exc, pool, principal.workspace_id) from exc
        headers = {
            "Location": f"/v1/generations/{created.id}",
            **await deprecation_headers(catalogue, created),
        }
        done, applied = await generation_when_done(hub, pool, created, wait_s)
        return Response(done, status_code=HTTP_201_CREATED, headers={**headers, **applied})

    @post(
        "/batch",
        summary="Create up to 1,000 generations in one transaction",
        description="Every item is checked as `POST /v1/generations` checks its body (fields at "
        "fault are named `items[i].field`) and all are created, or none. Items default to the "
        "`batch` priority. With an `Idempotency-Key` header a repeat answers 200 with the "
        "generations the first request created.",
        status_code=HTTP_201_CREATED,
        middleware=[CreationRateLimit],
        raises=[TooManyRequests],
        request_max_body_size=MAX_BATCH_BODY,
        responses={
            HTTP_200_OK: ResponseSpec(
                data_container=CreatedGenerations,
                generate_examples=False,
                description="The generations an earlier request with the same Idempotency-Key "
                "created",
            )
        },
    )
    async def create_batch_of_generations(
        self,
        data: JSONBody[BatchCreate],
        request: Request[Principal, Any, Any],
        pool: PoolDep,
        settings: SettingsDep,
        catalogue: CatalogueDep,
        idempotency_key: Annotated[
            str | None, HeaderParameter(name="Idempotency-Key", max_length=255)
        ] = None,
    ) -> Response[CreatedGenerations]:
        principal = request.user
        for index, item in enumerate(data.items):
            prefix = f"items[{index}]."
            if item.n is not None:
                raise InvalidField(f"{prefix}n", "n is for single creations: list each item")
            await check_request(item, catalogue, settings, prefix)
        await check_projects(pool, principal, data.items)
        rows = [insert_params(item, principal, None, "batch") for item in data.items]
        try:
            result = await create_batch(pool, principal.workspace_id, rows, idempotency_key)
        except (errors.IntegrityError, errors.DataError) as exc:
            raise constraint_error(exc, "items.") from exc
        except psycopg.DatabaseError as exc:
            raise await over_quota(exc, pool, principal.workspace_id) from exc
        return Response(
            CreatedGenerations(data=result.generations, batch_id=result.batch_id),
            status_code=HTTP_201_CREATED if result.created else HTTP_200_OK,
        )

    async def _variations(
        self,
        data: GenerationCreate,
        principal: Principal,
        pool: AsyncConnectionPool,
        hub: Hub,
        idempotency_key: str | None,
        wait_s: int | None,
    ) -> Response[Generation | CreatedGenerations]:
        assert data.n is not None
        rows = variations(insert_params(data, principal, None), data.n)
        try:
            result = await create_batch(pool, principal.workspace_id, rows, idempotency_key)
        except (errors.IntegrityError, errors.DataError) as exc:
            raise constraint_error(exc) from exc
        except psycopg.DatabaseError as exc:
            raise await over_quota(exc, pool, principal.workspace_id) from exc
        done, applied = await generations_when_done(hub, pool, result.generations, wait_s)
        return Response(
            CreatedGenerations(data=done, batch_id=result.batch_id),
            status_code=HTTP_201_CREATED if result.created else HTTP_200_OK,
            headers=applied,
        )

    @get("/{generation_id:uuid}", summary="A generation")
    async def get_generation(
        self, generation_id: FromPath[UUID], request: Request[Principal, Any, Any], pool: PoolDep
    ) -> Generation:
        return await fetch_generation(pool, generation_id, request.user.workspace_id)

    @get("/", summary="List generations, newest first (keyset pagination)")
    async def list_generations(
        self,
        request: Request[Principal, Any, Any],
        pool: PoolDep,
        project_id: FromQuery[UUID | None] = None,
        status: FromQuery[Status | None] = None,
        limit: Annotated[int, QueryParameter(description="page size, 1-200")] = 50,
        cursor: Annotated[
            str | None, QueryParameter(description="next_cursor of the previous page")
        ] = None,
    ) -> GenerationList:
        check_limit(limit)
        cursor_ts, cursor_id = decode_cursor(cursor)
        rows = await store.list_generations(
            pool,
            request.user.workspace_id,
            project_id=project_id,
            status=status,
            cursor_ts=cursor_ts,
            cursor_id=cursor_id,
            limit=limit + 1,
        )
        data, next_cursor = page(rows, limit)
        return GenerationList(data=data, next_cursor=next_cursor)
