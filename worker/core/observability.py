"""Error reporting to Sentry (`SENTRY_DSN`), shared by the API and the worker.

What is reported: unexpected exceptions in API requests (sentry-sdk's Litestar integration) and in
worker tasks (the `report_task_errors` task middleware, tagged with task, generation_id, provider, attempt).
What is not: a provider's or the catalogue's permanent refusals (content policy, invalid input,
a missing record) — they are the product working as designed, recorded on the generation — and
runs cut short by a shutdown. Transient catalogue errors that will be retried are warnings.
No personal data: `send_default_pii=False`, no request bodies, no local variables, and prompts
and masks scrubbed wherever they appear.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import sentry_sdk
from litestar.exceptions import SerializationException
from procrastinate import JobContext
from procrastinate.middleware import AsyncCallNext
from procrastinate.worker import Worker
from sentry_sdk.scrubber import DEFAULT_DENYLIST, EventScrubber
from sentry_sdk.types import Breadcrumb, BreadcrumbHint, Event, Hint

from worker.core.errors import GenerationError
from worker.core.logs import hide_query_tokens, hide_url_credentials

# User content and credentials the default denylist does not know about.
SCRUBBED_KEYS = [
    "prompt",
    "prompt_spec",
    "base_prompt",
    "negative_prompt",
    "mask",
    "service_role_key",
    "webhook_secret",
    "database_url",
]


class _State:
    enabled = False


def init_sentry(
    dsn: str | None, *, component: str, environment: str, release: str | None = None
) -> bool:
    """Starts the SDK when a DSN is set; `component` (api, worker) becomes a tag."""
    if not dsn:
        return False
    integrations: list[Any] = []
    if component == "api":
        from sentry_sdk.integrations.litestar import LitestarIntegration

        integrations.append(LitestarIntegration())
    from sentry_sdk.integrations.logging import LoggingIntegration

    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        release=release,
        send_default_pii=False,
        include_local_variables=False,
        max_request_body_size="never",
        event_scrubber=EventScrubber(denylist=DEFAULT_DENYLIST + SCRUBBED_KEYS, recursive=True),
        # Log records stay breadcrumbs: errors are captured where they happen, once.
        integrations=[*integrations, LoggingIntegration(event_level=None)],
        before_send=drop_expected_failures,
        before_breadcrumb=hide_tokens_in_breadcrumb,
    )
    sentry_sdk.set_tag("component", component)
    _State.enabled = True
    return True


def _hide_tokens_in_request(event: Event) -> None:
    request = event.get("request")
    if isinstance(request, dict):
        for key in ("query_string", "url"):
            value = request.get(key)
            if isinstance(value, str):
                request[key] = hide_query_tokens(value)


def drop_expected_failures(event: Event, hint: Hint) -> Event | None:
    _hide_tokens_in_request(event)
    exc_info = hint.get("exc_info")
    error = exc_info[1] if exc_info else None
    if isinstance(error, SerializationException):
        # A malformed request body: the client's mistake, answered with a 400 (api/problems.py).
        return None
    if isinstance(error, GenerationError):
        if not error.retryable:
            return None
        event["level"] = "warning"
        event.setdefault("tags", {})["error_code"] = error.code.value
    return event


def hide_tokens_in_breadcrumb(crumb: Breadcrumb, hint: BreadcrumbHint) -> Breadcrumb | None:
    """Breadcrumbs of a prompt logged with LOG_PROMPTS, or of a URL with a query credential."""
    message = crumb.get("message")
    if isinstance(message, str):
        if " prompt: " in message and crumb.get("category") == "worker.queue.lifecycle":
            return None
        crumb["message"] = hide_url_credentials(hide_query_tokens(message))
    return crumb


def tag_generation(provider: str) -> None:
    """Called once the running task knows which provider its generation uses."""
    if _State.enabled:
        sentry_sdk.set_tag("provider", provider)


def _interrupted(error: BaseException) -> bool:
    return isinstance(error, asyncio.CancelledError | psycopg.OperationalError)


async def report_task_errors(
    call_next: AsyncCallNext, context: JobContext, worker: Worker | None
) -> Any:
    """A procrastinate task middleware (installed once, in worker/queue/daemon.py): each run in
    its own scope tagged with the task, attempt, job and generation; errors captured, except runs
    cut short by a shutdown or a lost database."""
    if not _State.enabled:
        return await call_next()
    with sentry_sdk.isolation_scope() as scope:
        job = context.job
        if job is not None:
            scope.set_tag("task", job.task_name)
            scope.set_tag("attempt", str(job.attempts + 1))
            scope.set_tag("job_id", str(job.id))
            if "generation_id" in job.task_kwargs:
                scope.set_tag("generation_id", str(job.task_kwargs["generation_id"]))
        try:
            return await call_next()
        except Exception as error:
            if not _interrupted(error):
                sentry_sdk.capture_exception(error)
            raise
