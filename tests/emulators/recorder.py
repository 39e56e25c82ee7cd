"""What an emulator received, for tests to assert on, and what it should answer next."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

from litestar import Request
from litestar.datastructures import UploadFile
from PIL import Image, UnidentifiedImageError


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    query: dict[str, str]
    json: Any = None
    form: dict[str, Any] = field(default_factory=dict)
    body: bytes = b""


@dataclass
class Scripted:
    """A canned answer: the next matching request gets it instead of the normal one."""

    status: int
    body: bytes | str | dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


@dataclass
class Recorder:
    requests: list[Recorded] = field(default_factory=list)
    scripted: list[Scripted] = field(default_factory=list)

    def script(self, *answers: Scripted) -> None:
        self.scripted.extend(answers)

    def next_scripted(self) -> Scripted | None:
        return self.scripted.pop(0) if self.scripted else None

    def reset(self) -> None:
        self.requests.clear()
        self.scripted.clear()


async def record(request: Request[Any, Any, Any]) -> Recorded:
    """The request as a test will want to see it: multipart fields with their files read, or
    the raw body (and its JSON, when it is JSON)."""
    recorded = Recorded(
        method=request.method,
        path=request.url.path,
        headers=dict(request.headers),
        query=dict(request.query_params),
    )
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form()
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                recorded.form[name] = {
                    "filename": value.filename,
                    "content_type": value.content_type,
                    "data": await value.read(),
                }
            else:
                recorded.form[name] = value
        return recorded
    recorded.body = await request.body()
    if recorded.body and content_type.startswith("application/json"):
        recorded.json = await request.json()
    return recorded


def read_image(part: Any) -> Image.Image | None:
    """A recorded file part decoded as an image, or None when it is not one."""
    if not isinstance(part, dict):
        return None
    try:
        with Image.open(io.BytesIO(part["data"])) as image:
            image.load()
            return image
    except (UnidentifiedImageError, OSError):
        return None
