"""Request bodies and list envelopes (msgspec Structs): the API's input edge."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from msgspec import Meta

from worker.core.models import Generation, Project

NO_NUL = r"^[^\x00]*$"
HTTP_URL = r"^https?://[^\s\x00]+$"
SIZE = r"^\d{2,4}x\d{2,4}$"
ASPECT_RATIO = r"^[1-9]\d{0,2}:[1-9]\d{0,2}$"
# What a value failing each pattern is told (msgspec's own message quotes the regex).
PATTERN_MESSAGES = {
    NO_NUL: "must not contain NUL characters",
    HTTP_URL: "must be an http(s) URL",
    SIZE: "must be WIDTHxHEIGHT, for example 1024x1024",
    ASPECT_RATIO: "must be W:H, for example 16:9",
}
# Metadata is the client's own JSON: each string in it (key or value) and its nesting are
# bounded, so that a refusal names that cause rather than the inline-image guard's (a long
# run of letters looks like base64 to it).
METADATA_TEXT_MAX = 2000
METADATA_DEPTH_MAX = 16
Name = Annotated[str, Meta(min_length=1, max_length=200, pattern=NO_NUL)]
PromptText = Annotated[str, Meta(min_length=1, max_length=4000, pattern=NO_NUL)]
ShortText = Annotated[str, Meta(max_length=2000, pattern=NO_NUL)]
HttpUrl = Annotated[str, Meta(max_length=4096, pattern=HTTP_URL)]
Size = Annotated[str, Meta(pattern=SIZE)]
AspectRatio = Annotated[str, Meta(pattern=ASPECT_RATIO)]
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


MAX_DEADLINE_S = 7 * 24 * 3600
MAX_RUN_AHEAD = timedelta(days=90)

PRIORITY_LEVELS: dict[str, int] = {"interactive": 0, "batch": -1}
PriorityLevel = Literal["interactive", "batch"] | Annotated[int, Meta(ge=-3, le=3)]


def priority_level(value: str | int | None, default: str = "interactive") -> int:
    if value is None:
        return PRIORITY_LEVELS[default]
    return PRIORITY_LEVELS[value] if isinstance(value, str) else value


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
    # `interactive` (0) overtakes `batch` (-1); an integer level from -3 to 3 places it exactly.
    # Left out: interactive, and batch for the items of POST /v1/generations/batch.
    priority: PriorityLevel | None = None
    # Variations: n generations with distinct seeds in one batch (the answer is then a list).
    n: Annotated[int, Meta(ge=1, le=10)] | None = None
    # Fail with `timeout` if not finished this many seconds after it may start.
    deadline_s: Annotated[int, Meta(ge=1, le=MAX_DEADLINE_S)] | None = None
    # Start no earlier than this (RFC 3339 with an offset).
    run_at: Annotated[datetime, Meta(tz=True)] | None = None


class BatchCreate(msgspec.Struct, forbid_unknown_fields=True):
    items: Annotated[list[GenerationCreate], Meta(min_length=1, max_length=1000)]


class CreatedGenerations(msgspec.Struct):
    """The generations one request created, in the order asked, and their batch."""

    data: list[Generation]
    batch_id: UUID


class Regenerate(msgspec.Struct, forbid_unknown_fields=True):
    """What a regenerate changes; every field left out is kept from the generation."""

    prompt: PromptText | None = None
    prompt_spec: PromptSpec | None = None
    provider: Provider | None = None
    model: Annotated[str, Meta(min_length=1, max_length=200, pattern=NO_NUL)] | None = None


def metadata_problem(value: Any, path: str = "metadata", depth: int = 0) -> tuple[str, str] | None:
    """(field, message) for the first part of `metadata` over its limits, or None."""
    if depth > METADATA_DEPTH_MAX:
        return path, f"metadata nested too deeply (at most {METADATA_DEPTH_MAX} levels)"
    if isinstance(value, str) and len(value) > METADATA_TEXT_MAX:
        return path, (
            f"metadata value too large ({len(value)} characters; at most {METADATA_TEXT_MAX})"
        )
    if isinstance(value, dict):
        for key, item in value.items():
            if len(key) > METADATA_TEXT_MAX:
                return path, f"metadata key too long (at most {METADATA_TEXT_MAX} characters)"
            if found := metadata_problem(item, f"{path}.{key}", depth + 1):
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            if found := metadata_problem(item, f"{path}[{index}]", depth + 1):
                return found
    return None


class ProjectList(msgspec.Struct):
    data: list[Project]
    next_cursor: str | None


class GenerationList(msgspec.Struct):
    data: list[Generation]
    next_cursor: str | None
