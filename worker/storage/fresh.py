"""URLs that keep working: a generation's (and a node's) URLs, re-made from their storage keys.

With a public bucket or local files the URLs stored at completion serve for ever, and they are
handed out as stored. With a private bucket (SUPABASE_SIGNED_URLS) a stored URL dies after
SUPABASE_SIGNED_URL_TTL_S, so every reader — the API, the workflow stream's snapshot, outgoing
webhooks — asks storage for fresh ones (signed in one call per batch, cached briefly by the
backend). A file whose URL cannot be signed keeps its stored URL: a read never fails for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import msgspec

from worker.core.models import Generation
from worker.storage.base import Storage

# (key column, URL column) of each stored file of a generation.
_FILES = (
    ("result_key", "result_image_url"),
    ("thumbnail_key", "thumbnail_url"),
    ("mask_key", "mask_url"),
    ("original_key", "original_image_url"),
)
# The same of a canvas node's data (sql/migrations/023).
_NODE_FILES = (("imageKey", "imageUrl"), ("thumbnailKey", "thumbnailUrl"))

G = TypeVar("G", bound=Generation)


async def fresh_generations(storage: Storage, generations: Sequence[G]) -> list[G]:
    if not storage.signs_urls:
        return list(generations)
    keys = [
        key
        for generation in generations
        for key_field, _ in _FILES
        if (key := getattr(generation, key_field))
    ]
    if not keys:
        return list(generations)
    urls = await storage.urls(keys)
    out: list[G] = []
    for generation in generations:
        changes = {
            url_field: urls[key]
            for key_field, url_field in _FILES
            if (key := getattr(generation, key_field)) in urls
        }
        out.append(msgspec.structs.replace(generation, **changes) if changes else generation)
    return out


async def fresh_generation(storage: Storage, generation: G) -> G:
    [fresh] = await fresh_generations(storage, [generation])
    return fresh


async def fresh_node_data(
    storage: Storage, nodes: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Each node's `node_data` with its image URLs re-made from `imageKey` / `thumbnailKey`."""
    if not storage.signs_urls:
        return list(nodes)
    keys = [
        key
        for data in nodes
        for key_field, _ in _NODE_FILES
        if isinstance(key := data.get(key_field), str)
    ]
    urls = await storage.urls(keys) if keys else {}
    out = []
    for data in nodes:
        changes = {
            url_field: urls[key]
            for key_field, url_field in _NODE_FILES
            if isinstance(key := data.get(key_field), str) and key in urls
        }
        out.append({**data, **changes} if changes else data)
    return out
