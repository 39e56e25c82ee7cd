"""Request bodies and list envelopes (msgspec Structs): the API's input edge."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from msgspec import Meta

from worker.models import Generation, Project

NO_NUL = r"^[^\x00]*$"
Name = Annotated[str, Meta(min_length=1, max_length=200, pattern=NO_NUL)]
PromptText = Annotated[str, Meta(min_length=1, max_length=4000, pattern=NO_NUL)]
ShortText = Annotated[str, Meta(max_length=2000, pattern=NO_NUL)]
HttpUrl = Annotated[str, Meta(max_length=4096, pattern=r"^https?://[^\s\x00]+$")]
Size = Annotated[str, Meta(pattern=r"^\d{2,4}x\d{2,4}$")]
AspectRatio = Annotated[str, Meta(pattern=r"^[1-9]\d{0,2}:[1-9]\d{0,2}$")]
Seed = Annotated[int, Meta(ge=0, le=2**32 - 1)]
# Checked against the provider registry by the route (worker/providers/registry.py).
Provider = Annotated[str, Meta(min_length=1, max_length=50, pattern=NO_NUL)]
WebhookEvent = Literal["start", "progress", "completed"]


class ProjectCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Name


class PromptSpec(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    base_prompt: PromptText | None = None
    style_modifiers: Annotated[
        list[Annotated[str, Meta(max_length=200, pattern=NO_NUL)]], Meta(max_length=20)
    ] = []
    size: Size | None = None
    aspect_ratio: AspectRatio | None = None
    quality: Literal["standard", "hd", "low", "medium", "high", "auto"] | None = None
    seed: Seed | None = None
    negative_prompt: ShortText | None = None


class GenerationCreate(msgspec.Struct, forbid_unknown_fields=True):
    project_id: UUID
    prompt: PromptText | None = None
    prompt_spec: PromptSpec | None = None
    provider: Provider = "local"
    model: Annotated[str, Meta(min_length=1, max_length=200, pattern=NO_NUL)] | None = None
    original_image_url: HttpUrl | None = None
    node_id: Annotated[str, Meta(min_length=1, max_length=200, pattern=NO_NUL)] | None = None
    workflow_id: UUID | None = None
    webhook_url: HttpUrl | None = None
    webhook_events_filter: Annotated[list[WebhookEvent], Meta(max_length=3)] | None = None
    metadata: Annotated[dict[str, Any], Meta(max_length=50)] = {}


class ProjectList(msgspec.Struct):
    data: list[Project]
    next_cursor: str | None


class GenerationList(msgspec.Struct):
    data: list[Generation]
    next_cursor: str | None
