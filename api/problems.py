"""Every error is problem-details JSON (RFC 9457) naming the field at fault; never a bare 500."""

from __future__ import annotations

import logging
import re
from datetime import datetime
from typing import Any

import msgspec
import psycopg
from litestar import Request, Response
from litestar.exceptions import HTTPException, SerializationException, ValidationException
from litestar.status_codes import (
    HTTP_400_BAD_REQUEST,
    HTTP_422_UNPROCESSABLE_ENTITY,
    HTTP_500_INTERNAL_SERVER_ERROR,
    HTTP_503_SERVICE_UNAVAILABLE,
)

from api.schemas import PATTERN_MESSAGES

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class FieldError(msgspec.Struct):
    field: str
    message: str


class QuotaWindow(msgspec.Struct):
    start: datetime
    end: datetime


class Problem(msgspec.Struct, omit_defaults=True):
    type: str
    title: str
    status: int
    detail: str | None = None
    # The error catalogue's code, when one applies (mask_missing, mask_invalid, ...).
    code: str | None = None
    errors: list[FieldError] = []
    # Extension members of a 429 quota_exceeded (RFC 9457 section 3.2): which workspace limit,
    # its value, the window's use so far, the window and when it resets.
    limit: str | None = None
    limit_value: int | float | None = None
    usage: int | float | None = None
    window: QuotaWindow | None = None
    resets_at: datetime | None = None


class InvalidField(HTTPException):
    """422 (or `status_code`) for one field of the request."""

    status_code = HTTP_422_UNPROCESSABLE_ENTITY

    def __init__(
        self, field: str, message: str, code: str | None = None, *, status_code: int | None = None
    ) -> None:
        super().__init__(
            detail=f"{field}: {message}",
            extra=[{"key": field, "message": message}],
            status_code=status_code,
        )
        self.code = code
        # Named as given: Litestar calls the body `data`, and so may a webhook payload.
        self.field_error = FieldError(field=field, message=message)


def problem_response(
    status: int,
    detail: str | None,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
    code: str | None = None,
    extension: dict[str, Any] | None = None,
) -> Response[Problem]:
    title = _TITLES.get(status, "Error")
    slug = title.lower().replace(" ", "-")
    return Response(
        Problem(
            type=f"https://imagejobs.dev/problems/{slug}",
            title=title,
            status=status,
            detail=detail,
            code=code,
            errors=errors or [],
            **(extension or {}),
        ),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


_NAMED_FIELD = re.compile(r"(?:missing required|contains unknown) field `([^`]+)`")


_PATTERN_MESSAGES = {repr(pattern): text for pattern, text in PATTERN_MESSAGES.items()}
_REGEX = re.compile(r"matching regex ('.*')")


def _humane(message: str) -> str:
    """msgspec's "Expected `str` matching regex '...'" in words: what the pattern is for."""
    regex = _REGEX.search(message)
    if regex:
        return _PATTERN_MESSAGES.get(regex[1], "has an invalid format")
    return message


def _field_errors(extra: Any) -> list[FieldError]:
    if not isinstance(extra, list):
        return []
    errors = []
    for item in extra:
        if isinstance(item, dict):
            key = str(item.get("key") or "body")
            message = str(item.get("message", "invalid value"))
            named = _NAMED_FIELD.search(message)
            if key in ("data", "body") and named:
                key = named[1]
            elif named and key.endswith(".data"):
                key = f"{key.removesuffix('.data')}.{named[1]}"
            errors.append(
                FieldError(field="body" if key == "data" else key, message=_humane(message))
            )
    return errors


_AT_PATH = re.compile(r" - at `\$\.?([^`]*)`$")


def invalid_shape(exc: msgspec.ValidationError) -> InvalidField:
    """A 422 naming the field msgspec's message points at (`... - at `$.data.job_id``)."""
    message = str(exc)
    at = _AT_PATH.search(message)
    path = at[1] if at else ""
    message = message[: at.start()] if at else message
    named = _NAMED_FIELD.search(message)
    if named:
        path = f"{path}.{named[1]}" if path else named[1]
    return InvalidField(path or "body", _humane(message))


def _validation(exc: ValidationException) -> Response[Problem]:
    errors = _field_errors(exc.extra)
    detail = str(exc.detail)
    # Litestar reports undecodable bodies and schema mismatches alike; the first is a 400.
    malformed = "malformed" in detail.lower() or "json is malformed" in detail.lower()
    if not errors and "decode" in detail.lower():
        malformed = True
    if any(e.message == "'data'" for e in errors):
        # Litestar's way of saying the body is missing altogether.
        errors = [FieldError(field="body", message="a JSON request body is required")]
        malformed = True
    status = HTTP_400_BAD_REQUEST if malformed else HTTP_422_UNPROCESSABLE_ENTITY
    if not errors:
        errors = [FieldError(field="body", message=detail)]
    return problem_response(status, "; ".join(f"{e.field}: {e.message}" for e in errors), errors)


def handle_http_exception(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Problem]:
    if isinstance(exc, ValidationException):
        return _validation(exc)
    errors = [exc.field_error] if isinstance(exc, InvalidField) else _field_errors(exc.extra)
    headers = dict(exc.headers) if exc.headers else None
    return problem_response(
        exc.status_code,
        str(exc.detail),
        errors,
        headers,
        code=getattr(exc, "code", None),
        extension=getattr(exc, "problem_extension", None),
    )


def handle_database_unavailable(_: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    logger.warning("database unavailable: %s", type(exc).__name__)
    return problem_response(
        HTTP_503_SERVICE_UNAVAILABLE,
        "the database is unavailable; retry shortly",
        headers={"Retry-After": "2"},
    )


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(HTTP_500_INTERNAL_SERVER_ERROR, "internal error")


def handle_malformed_body(
    _: Request[Any, Any, Any], exc: SerializationException
) -> Response[Problem]:
    """Litestar turns a malformed body into a 400 inside the handler, but sentry-sdk's Litestar
    integration parses the body before that, outside it: the same 400 either way."""
    message = _humane(str(exc))
    return problem_response(HTTP_400_BAD_REQUEST, f"body: {message}", [FieldError("body", message)])


def handle_recursion(request: Request[Any, Any, Any], exc: RecursionError) -> Response[Problem]:
    """msgspec gives up on JSON nested deeper than it recurses: the body's fault, a 400. Any
    other RecursionError is ours."""
    if "while deserializing" not in str(exc):
        return handle_unexpected(request, exc)
    message = "JSON nested too deeply"
    return problem_response(HTTP_400_BAD_REQUEST, f"body: {message}", [FieldError("body", message)])


EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {
    HTTPException: handle_http_exception,
    SerializationException: handle_malformed_body,
    RecursionError: handle_recursion,
    psycopg.OperationalError: handle_database_unavailable,
    TimeoutError: handle_database_unavailable,
    Exception: handle_unexpected,
}

__all__ = [
    "EXCEPTION_HANDLERS",
    "PROBLEM_JSON",
    "InvalidField",
    "Problem",
    "QuotaWindow",
    "problem_response",
]
