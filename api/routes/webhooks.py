"""POST /v1/webhooks/{provider}: provider callbacks. Verify first, then record the delivery and
defer the work in one SQL call (sql/migrations/026); no download or upload happens here."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Request, Response, post
from litestar.exceptions import NotAuthorizedException, NotFoundException
from litestar.params import FromPath
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED, HTTP_400_BAD_REQUEST
from psycopg import errors
from psycopg_pool import AsyncConnectionPool

from api.auth.webhooks import FalVerifier, SignatureError, verify_standard
from api.deps import FalVerifierDep, PoolDep, SettingsDep
from api.problems import InvalidField, invalid_shape
from worker.core import store
from worker.core.config import Settings
from worker.core.webhook_payloads import PARSERS, WebhookOutcome

logger = logging.getLogger(__name__)

# webhook_deliveries.id's CHECK; the header each provider's delivery id comes from.
MAX_DELIVERY_ID = 255
DELIVERY_ID_HEADERS = {"generic": "webhook-id", "fal": "x-fal-webhook-request-id"}


class WebhookAnswer(msgspec.Struct):
    status: str


async def _verify(
    provider: str, body: bytes, headers: dict[str, str], settings: Settings, fal: FalVerifier
) -> str:
    if provider == "generic":
        return verify_standard(settings.webhook_secret, body, headers)
    return str(await fal.verify(body, headers))


@post(
    "/v1/webhooks/{provider:str}",
    summary="Provider callbacks (Standard Webhooks for `generic`, ED25519 for `fal`)",
    tags=["webhooks"],
    status_code=HTTP_202_ACCEPTED,
    request_max_body_size=1024 * 1024,
)
async def receive_webhook(
    provider: FromPath[str],
    request: Request[Any, Any, Any],
    pool: PoolDep,
    settings: SettingsDep,
    fal_verifier: FalVerifierDep,
) -> Response[WebhookAnswer]:
    if provider not in PARSERS:
        raise NotFoundException(f"no webhook receiver for provider {provider!r}")
    body = await request.body()
    headers = {k.lower(): v for k, v in request.headers.items()}
    try:
        delivery_id = await _verify(provider, body, headers, settings, fal_verifier)
    except SignatureError as exc:
        raise NotAuthorizedException(str(exc)) from exc
    if len(delivery_id) > MAX_DELIVERY_ID:
        raise InvalidField(
            DELIVERY_ID_HEADERS[provider],
            f"at most {MAX_DELIVERY_ID} characters",
            status_code=HTTP_400_BAD_REQUEST,
        )
    try:
        payload = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError) as exc:
        message = "JSON nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise InvalidField("body", message, status_code=HTTP_400_BAD_REQUEST) from exc
    try:
        outcome = PARSERS[provider](payload)
    except msgspec.ValidationError as exc:
        raise invalid_shape(exc) from exc
    try:
        return await _record(provider, delivery_id, payload, outcome, pool)
    except errors.UntranslatableCharacter as exc:
        raise InvalidField("body", "must not contain NUL characters") from exc
    except errors.CheckViolation as exc:
        if exc.diag.constraint_name == "webhook_deliveries_no_inline_images":
            raise InvalidField("body", "image data is not accepted: pass its URL") from exc
        raise


_ANSWERS = {
    "accepted": HTTP_202_ACCEPTED,
    "duplicate": HTTP_200_OK,
    "unknown_job": HTTP_200_OK,
    "ignored": HTTP_200_OK,
}


async def _record(
    provider: str,
    delivery_id: str,
    payload: Any,
    outcome: WebhookOutcome,
    pool: AsyncConnectionPool,
) -> Response[WebhookAnswer]:
    answer = await store.receive_webhook(
        pool, delivery_id, provider, outcome.job_id, payload, outcome.state
    )
    if answer == "unknown_job":
        logger.warning("webhook %s names an unknown job %r", delivery_id, outcome.job_id)
    return Response(WebhookAnswer(answer), status_code=_ANSWERS[answer])
