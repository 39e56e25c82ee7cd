"""fal through its queue API (httpx): submit with an optional webhook, then status and result.

https://docs.fal.ai/model-endpoints/queue: POST {base}/{model} queues a request; status, result
and cancel live under {base}/{owner}/{app}/requests/{id} (the model id without its sub-path).
"""

from __future__ import annotations

from typing import Any

import httpx

from worker.core.errors import ErrorCode, GenerationError
from worker.core.webhook_payloads import parse_fal_result
from worker.providers.base import ImageRequest, JobStatus
from worker.providers.common import scrub, status_error

_STATES = {"IN_QUEUE": "queued", "IN_PROGRESS": "running", "COMPLETED": "completed"}


def app_id(model: str) -> str:
    """`fal-ai/flux/dev` -> `fal-ai/flux`: the part of a model id its request URLs use."""
    return "/".join(model.split("/")[:2])


def _detail(response: httpx.Response) -> tuple[str, list[str]]:
    """fal's error body: `{"detail": "..."}` or `{"detail": [{"msg", "type", ...}]}` (branch on
    `type`, never on `msg`). Returns the scrubbed message and the machine types."""
    try:
        body = response.json()
    except ValueError:
        return "", []
    detail = body.get("detail") if isinstance(body, dict) else body
    if isinstance(detail, str):
        return scrub(detail), []
    items = [d for d in detail if isinstance(d, dict)] if isinstance(detail, list) else []
    message = "; ".join(str(d.get("msg", "")) for d in items if d.get("msg"))
    return scrub(message), [str(d.get("type", "")) for d in items]


def _raise_for(response: httpx.Response, what: str, model: str, *, submit: bool) -> None:
    """fal's own readings first (its 422 content refusal, a 404 for a request id), then the
    policy every provider shares (`status_error`)."""
    if response.is_success:
        return
    status = response.status_code
    message, types = _detail(response)
    detail = f"{what}: HTTP {status}" + (f": {message}" if message else "")
    if status == 422 and (
        "content_policy_violation" in types
        or ("content" in response.text.lower() and "policy" in response.text.lower())
    ):
        raise GenerationError(ErrorCode.CONTENT_POLICY, detail)
    if status == 404 and not submit:
        # Status, result and cancel address a request id: a 404 there is not about the model.
        raise GenerationError(ErrorCode.NO_RESULT, f"{detail} (unknown request)")
    if status == 422:
        raise GenerationError(ErrorCode.NO_RESULT, f"{detail} (invalid input)")
    raise status_error(status, detail, model=model, credentials="FAL_KEY", headers=response.headers)


class FalProvider:
    name = "fal"
    default_side = 1024

    def __init__(
        self,
        key: str | None,
        base_url: str = "https://queue.fal.run",
        *,
        timeout_s: float = 30.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Key {key}"} if key else {}
        self.client = client or httpx.AsyncClient(headers=headers, timeout=timeout_s)

    def arguments(self, request: ImageRequest) -> tuple[dict[str, Any], list[str]]:
        """The model input, and the prompt_spec fields fal's image models ignore."""
        arguments: dict[str, Any] = {
            "prompt": request.prompt,
            "image_size": {"width": request.width, "height": request.height},
            "num_images": 1,
            "enable_safety_checker": True,
            "output_format": "png",
        }
        ignored = []
        if request.seed is not None:
            arguments["seed"] = request.seed
        if request.negative_prompt:
            arguments["negative_prompt"] = request.negative_prompt
        if request.source_url:
            arguments["image_url"] = request.source_url
        if request.quality:
            ignored.append("quality")
        return arguments, ignored

    async def _request(self, method: str, url: str, what: str, model: str, **kwargs: Any) -> Any:
        try:
            response = await self.client.request(method, url, **kwargs)
        except httpx.TimeoutException as exc:
            raise GenerationError(ErrorCode.PROVIDER_ERROR, f"{what}: timed out") from exc
        except httpx.HTTPError as exc:
            raise GenerationError(
                ErrorCode.PROVIDER_ERROR, f"{what}: {type(exc).__name__}"
            ) from exc
        _raise_for(response, what, model, submit=what == "submit")
        try:
            return response.json()
        except ValueError as exc:
            raise GenerationError(ErrorCode.PROVIDER_ERROR, f"{what}: not JSON") from exc

    async def submit(self, request: ImageRequest, webhook_url: str | None) -> str:
        arguments, _ = self.arguments(request)
        params = {"fal_webhook": webhook_url} if webhook_url else None
        body = await self._request(
            "POST",
            f"{self.base_url}/{request.model}",
            "submit",
            request.model,
            json=arguments,
            params=params,
        )
        request_id = body.get("request_id") if isinstance(body, dict) else None
        if not isinstance(request_id, str) or not request_id:
            raise GenerationError(ErrorCode.PROVIDER_ERROR, "submit: no request_id in the answer")
        return request_id

    async def status(self, model: str, job_id: str) -> JobStatus:
        body = await self._request(
            "GET",
            f"{self.base_url}/{app_id(model)}/requests/{job_id}/status",
            "status",
            model,
            params={"logs": "1"},
        )
        if not isinstance(body, dict) or body.get("status") not in _STATES:
            raise GenerationError(ErrorCode.PROVIDER_ERROR, "status: unexpected answer")
        logs = [
            str(entry.get("message", ""))
            for entry in body.get("logs") or []
            if isinstance(entry, dict)
        ]
        position = body.get("queue_position")
        error = body.get("error")
        return JobStatus(
            state="failed" if error else _STATES[body["status"]],
            queue_position=position if isinstance(position, int) else None,
            logs=logs,
            error=str(error) if error else None,
        )

    async def result_urls(self, model: str, job_id: str) -> list[str]:
        body = await self._request(
            "GET", f"{self.base_url}/{app_id(model)}/requests/{job_id}", "result", model
        )
        return parse_fal_result(body)

    async def cancel(self, model: str, job_id: str) -> None:
        await self._request(
            "PUT", f"{self.base_url}/{app_id(model)}/requests/{job_id}/cancel", "cancel", model
        )
