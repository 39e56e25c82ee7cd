"""The contract's records as msgspec Structs: rows out of Postgres, JSON out of the API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import msgspec

# The CHECKs of sql/migrations/001_schema.sql: a generation's status and step, a project's status.
Status = Literal["pending", "processing", "completed", "failed", "cancelled"]
Step = Literal[
    "queued",
    "fetching",
    "uploading",
    "preparing",
    "processing",
    "saving",
    "completed",
    "failed",
    "cancelled",
]
ProjectStatus = Literal["pending", "processing", "completed", "failed"]
TERMINAL_STATUSES: frozenset[Status] = frozenset({"completed", "failed", "cancelled"})

# The seed's badge labels, by status.
STATUS_LABELS: dict[Status, str] = {
    "pending": "Queued",
    "processing": "Processing...",
    "completed": "Ready",
    "failed": "Failed",
    "cancelled": "Cancelled",
}


class Project(msgspec.Struct, kw_only=True):
    id: UUID
    workspace_id: UUID
    name: str
    status: ProjectStatus
    image_count: int
    pending_count: int
    processing_count: int
    completed_count: int
    failed_count: int
    cancelled_count: int
    created_at: datetime
    updated_at: datetime
    # Set when a delete of the project started (sql/migrations/025): it is then hidden.
    deleting_at: datetime | None = None


class Generation(msgspec.Struct, kw_only=True):
    id: UUID
    workspace_id: UUID
    user_id: UUID | None
    project_id: UUID
    prompt: str
    prompt_spec: dict[str, Any]
    provider: str
    model: str
    original_image_url: str | None
    result_image_url: str | None
    status: Status
    step: Step
    progress: int
    error_code: str | None
    error_message: str | None
    version: int
    parent_id: UUID | None
    metadata: dict[str, Any]
    provider_job_id: str | None
    job_id: int | None
    attempts: int
    node_id: str | None
    workflow_id: UUID | None
    webhook_url: str | None
    webhook_events_filter: list[str] | None
    idempotency_key: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    # What the worker acts on for an edit (never client metadata): set by the edit route only.
    edit_mode: Literal["add", "remove"] | None = None
    mask_url: str | None = None
    edited_from: UUID | None = None
    # A small preview stored beside the result (longest side 256 px).
    thumbnail_url: str | None = None
    # What to do about `error_code` (computed by the database from the catalogue).
    error_resolution: str | None = None
    # The queue level, -3 to 3 (the API's interactive is 0, batch -1); see sql/migrations/017.
    priority: int = 0
    # The batch it was created in (`n` or POST /v1/generations/batch), and its place there.
    batch_id: UUID | None = None
    batch_index: int | None = None
    # When its job may start, and by when it must be finished (else it fails with timeout).
    run_at: datetime | None = None
    deadline_at: datetime | None = None
    # Runnable generation jobs ahead of it while it waits (read by GET /v1/generations/{id}).
    queue_position: int | None = None
    # Where its files are stored (the truth; the URLs are how they are served), see sql/023.
    result_key: str | None = None
    thumbnail_key: str | None = None
    mask_key: str | None = None
    original_key: str | None = None  # an edit's source, when it is a result stored here


DeletionKind = Literal["generation", "project"]


class Deletion(msgspec.Struct, kw_only=True):
    """A delete as the audit trail records it (imagejobs_deletions, sql/migrations/025)."""

    id: int
    workspace_id: UUID
    kind: DeletionKind
    target_id: UUID
    deleted_by: str
    # `running` while a project delete goes on in the background, then `done`.
    status: Literal["running", "done"]
    requested_at: datetime
    deleted_at: datetime | None
    detail: dict[str, Any]
    job_id: int | None = None


class StoredFile(msgspec.Struct, frozen=True):
    """A file in storage: its key (where it is) and the URL it was served at when stored."""

    key: str
    url: str


class ImageEvent(msgspec.Struct, kw_only=True):
    id: int
    generation_id: UUID
    project_id: UUID
    workspace_id: UUID
    ts: datetime
    kind: str
    status: Status
    step: Step
    progress: int
    message: str | None
    data: dict[str, Any]
    # The writing transaction (xid8, as text): project streams order and resume by (txid, id).
    txid: str | None = None
