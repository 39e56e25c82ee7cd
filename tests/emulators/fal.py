"""An emulator of fal's queue API (https://docs.fal.ai/model-endpoints/queue).

Each request advances one state per status poll: IN_QUEUE → IN_PROGRESS (with logs) →
COMPLETED, unless a test scripts it to never finish or to fail.
"""

from __future__ import annotations

import io
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from litestar import Litestar, Request, Response, route
from litestar.exceptions import HTTPException
from litestar.params import FromPath
from PIL import Image

from tests.emulators.recorder import Recorded, Recorder

_REQUEST_PATH = re.compile(r"^([^/]+)/([^/]+)/requests/([^/]+)(/status|/cancel)?$")


@dataclass
class FalJob:
    model: str
    arguments: dict[str, Any]
    webhook: str | None
    polls: int = 0
    behaviour: str = "normal"  # normal | never | fail | nsfw | huge | not-an-image
    cancelled: bool = False


@dataclass
class FalState:
    key: str = "fal-test-key"
    jobs: dict[str, FalJob] = field(default_factory=dict)
    recorder: Recorder = field(default_factory=Recorder)
    next_behaviour: list[str] = field(default_factory=list)
    base_url: str = ""


def _png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 120, 40)).save(out, format="PNG")
    return out.getvalue()


def build_fal_emulator(state: FalState) -> Litestar:
    def check(request: Request[Any, Any, Any]) -> None:
        state.recorder.requests.append(
            Recorded(
                method=request.method,
                path=request.url.path,
                headers=dict(request.headers),
                query=dict(request.query_params),
            )
        )
        if request.headers.get("authorization") != f"Key {state.key}":
            raise HTTPException(status_code=401, detail="Invalid API key")
        scripted = state.recorder.next_scripted()
        if scripted is not None:
            raise _Scripted(scripted.status, scripted.body, scripted.headers)

    def checked_job(request: Request[Any, Any, Any], request_id: str) -> FalJob:
        check(request)
        job = state.jobs.get(request_id)
        if job is None:
            raise HTTPException(status_code=404, detail="Request not found")
        return job

    def urls(app: str, request_id: str) -> dict[str, str]:
        base = f"{state.base_url}/{app}/requests/{request_id}"
        return {
            "response_url": base,
            "status_url": f"{base}/status",
            "cancel_url": f"{base}/cancel",
        }

    async def submit(request: Request[Any, Any, Any], model: str) -> dict[str, Any]:
        check(request)
        arguments = await request.json()
        state.recorder.requests[-1].json = arguments
        request_id = str(uuid.uuid4())
        model = model.strip("/")
        behaviour = state.next_behaviour.pop(0) if state.next_behaviour else "normal"
        state.jobs[request_id] = FalJob(
            model, arguments, request.query_params.get("fal_webhook"), behaviour=behaviour
        )
        app = "/".join(model.split("/")[:2])
        return {"request_id": request_id, "queue_position": 0, **urls(app, request_id)}

    async def status(
        request: Request[Any, Any, Any], owner: str, app: str, request_id: str
    ) -> dict[str, Any]:
        job = checked_job(request, request_id)
        job.polls += 1
        logs = [
            {"message": f"step {i} of 3", "level": "INFO", "timestamp": "2026-01-01T00:00:00"}
            for i in range(1, min(job.polls, 3) + 1)
        ]
        if job.behaviour == "fail" and job.polls >= 2:
            return {
                "status": "COMPLETED",
                "error": "Model crashed",
                "logs": logs,
                **urls(f"{owner}/{app}", request_id),
            }
        if job.polls == 1:
            return {"status": "IN_QUEUE", "queue_position": 2, **urls(f"{owner}/{app}", request_id)}
        if job.polls == 2 or job.behaviour == "never":
            return {"status": "IN_PROGRESS", "logs": logs, **urls(f"{owner}/{app}", request_id)}
        return {
            "status": "COMPLETED",
            "logs": logs,
            "metrics": {"inference_time": 0.5},
            **urls(f"{owner}/{app}", request_id),
        }

    async def result(
        request: Request[Any, Any, Any], owner: str, app: str, request_id: str
    ) -> dict[str, Any]:
        job = checked_job(request, request_id)
        size = job.arguments.get("image_size") or {"width": 64, "height": 64}
        return {
            "images": [
                {
                    "url": f"{state.base_url}/files/{request_id}.png",
                    "width": size["width"],
                    "height": size["height"],
                    "content_type": "image/png",
                }
            ]
            if job.behaviour != "nsfw"
            else [],
            "seed": job.arguments.get("seed", 42),
            "has_nsfw_concepts": [job.behaviour == "nsfw"],
            "prompt": job.arguments.get("prompt"),
            "timings": {"inference": 0.5},
        }

    async def cancel(
        request: Request[Any, Any, Any], owner: str, app: str, request_id: str
    ) -> dict[str, str]:
        job = checked_job(request, request_id)
        job.cancelled = True
        return {"status": "CANCELLATION_REQUESTED"}

    async def files(name: str) -> bytes:
        job = state.jobs.get(name.removesuffix(".png"))
        if job is None:
            raise HTTPException(status_code=404, detail="no such file")
        if job.behaviour == "huge":
            return b"\x89PNG" + bytes(50 * 1024 * 1024)
        if job.behaviour == "not-an-image":
            return b"<html><body>Gateway error</body></html>"
        size = job.arguments.get("image_size") or {"width": 64, "height": 64}
        return _png(int(size["width"]), int(size["height"]))

    def scripted_handler(_: Request[Any, Any, Any], exc: _Scripted) -> Response[Any]:
        return Response(
            exc.body, status_code=exc.status, headers=exc.headers, media_type="application/json"
        )

    def http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
        return Response({"detail": exc.detail}, status_code=exc.status_code)

    @route("/{rest:path}", http_method=["GET", "POST", "PUT"])
    async def dispatch(request: Request[Any, Any, Any], rest: FromPath[str]) -> Response[Any]:
        path = rest.strip("/")
        if request.method == "GET" and path.startswith("files/"):
            return Response(
                await files(path.removeprefix("files/")), media_type="image/png", status_code=200
            )
        if request.method == "POST":
            return Response(await submit(request, path), status_code=200)
        match = _REQUEST_PATH.match(path)
        if match is None:
            raise HTTPException(status_code=404, detail="Not found")
        owner, app, request_id, tail = match.groups()
        if request.method == "PUT" and tail == "/cancel":
            return Response(await cancel(request, owner, app, request_id), status_code=202)
        if request.method == "GET" and tail == "/status":
            return Response(await status(request, owner, app, request_id), status_code=200)
        if request.method == "GET" and not tail:
            return Response(await result(request, owner, app, request_id), status_code=200)
        raise HTTPException(status_code=405, detail="Method not allowed")

    return Litestar(
        route_handlers=[dispatch],
        exception_handlers={_Scripted: scripted_handler, HTTPException: http_error},
        openapi_config=None,
    )


class _Scripted(Exception):
    def __init__(self, status: int, body: Any, headers: dict[str, str]) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers
