"""The OpenAPI document tells the truth about errors: every one is problem+json (RFC 9457).

Litestar documents the errors it knows about as application/json in its own shape; this swaps
them, and adds the errors every route can answer (auth, missing rows, bad input, body too large,
database unavailable), so clients and schema-driven fuzzers can rely on the document.
"""

from __future__ import annotations

from typing import Any

from litestar.openapi.spec import (
    Components,
    OpenAPI,
    OpenAPIMediaType,
    OpenAPIResponse,
    Reference,
    Schema,
    SecurityScheme,
)
from litestar.openapi.spec.enums import OpenAPIFormat, OpenAPIType

from api.problems import PROBLEM_JSON

_PROBLEM_SCHEMA = Schema(
    type=OpenAPIType.OBJECT,
    required=["type", "title", "status"],
    properties={
        "type": Schema(type=OpenAPIType.STRING),
        "title": Schema(type=OpenAPIType.STRING),
        "status": Schema(type=OpenAPIType.INTEGER),
        "detail": Schema(type=OpenAPIType.STRING),
        "code": Schema(
            type=OpenAPIType.STRING, description="error catalogue code, when one applies"
        ),
        "errors": Schema(
            type=OpenAPIType.ARRAY,
            items=Schema(
                type=OpenAPIType.OBJECT,
                required=["field", "message"],
                properties={
                    "field": Schema(type=OpenAPIType.STRING),
                    "message": Schema(type=OpenAPIType.STRING),
                },
            ),
        ),
        "limit": Schema(
            type=OpenAPIType.STRING,
            enum=["generations_per_day", "usd_per_day"],
            description="429 quota_exceeded: the workspace limit that was reached",
        ),
        "limit_value": Schema(
            type=OpenAPIType.NUMBER, description="429 quota_exceeded: the limit's value"
        ),
        "usage": Schema(
            type=OpenAPIType.NUMBER,
            description="429 quota_exceeded: generations (or estimated USD) used in the window",
        ),
        "window": Schema(
            type=OpenAPIType.OBJECT,
            required=["start", "end"],
            properties={
                "start": Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.DATE_TIME),
                "end": Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.DATE_TIME),
            },
            description="429 quota_exceeded: the quota window, the UTC day [start, end)",
        ),
        "resets_at": Schema(
            type=OpenAPIType.STRING,
            format=OpenAPIFormat.DATE_TIME,
            description="429 quota_exceeded: when the window resets (the next UTC midnight)",
        ),
    },
    description="RFC 9457 problem details",
)

_DESCRIPTIONS = {
    400: "Malformed request (the body is not JSON)",
    401: "Missing, invalid or revoked credentials",
    403: "Not a member of the workspace named by X-Workspace-Id",
    404: "No such resource in your workspace",
    405: "Method not allowed",
    409: "The resource is in a state that does not allow this",
    413: "Request body too large",
    422: "Invalid input; `errors` names each field at fault",
    429: "Too many requests for this key (see `Retry-After` and the `RateLimit-*` headers), "
    "or a workspace quota reached (`code` quota_exceeded: `limit`, `usage`, `resets_at`)",
    503: "The database is unavailable; retry shortly",
}


def _problem(status: int) -> OpenAPIResponse:
    return OpenAPIResponse(
        description=_DESCRIPTIONS.get(status, "Error"),
        content={
            PROBLEM_JSON: OpenAPIMediaType(schema=Reference(ref="#/components/schemas/Problem"))
        },
    )


def document_problems(schema: OpenAPI) -> None:
    components = schema.components if isinstance(schema.components, Components) else Components()
    components.schemas = {**(components.schemas or {}), "Problem": _PROBLEM_SCHEMA}
    schema.components = components
    for path, item in (schema.paths or {}).items():
        for method in ("get", "post", "put", "patch", "delete"):
            operation: Any = getattr(item, method, None)
            if operation is None:
                continue
            responses = dict(operation.responses or {})
            statuses = {400, 404, 405, 413, 422, 503}
            if path.startswith("/v1/"):
                statuses |= {401, 403, 409}
            for status in statuses | {
                int(code) for code in responses if code.isdigit() and int(code) >= 400
            }:
                responses[str(status)] = _problem(status)
            operation.responses = responses


_BEARER = SecurityScheme(
    type="http",
    scheme="bearer",
    description="An API key (`ij_...`, one workspace) or a Supabase user access token (JWT). "
    "With a user token, `X-Workspace-Id: <uuid>` names the workspace to act in; it may be "
    "left out when the user belongs to exactly one. Not a member: 403.",
)


def document_auth(schema: OpenAPI) -> None:
    """Every /v1 route but the provider webhooks (signed instead) takes the bearer credential."""
    components = schema.components if isinstance(schema.components, Components) else Components()
    components.security_schemes = {**(components.security_schemes or {}), "bearer": _BEARER}
    schema.components = components
    for path, item in (schema.paths or {}).items():
        if not path.startswith("/v1/") or path.startswith("/v1/webhooks/"):
            continue
        for method in ("get", "post", "put", "patch", "delete"):
            operation: Any = getattr(item, method, None)
            if operation is not None:
                operation.security = [{"bearer": []}]
