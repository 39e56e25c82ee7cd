"""Every generation a /v1 route answers with carries URLs that work now (worker/storage/fresh.py):
one after-request hook on the router, so no route can forget it."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Response
from litestar.types import AfterRequestHookHandler

from api.schemas import CreatedGenerations, GenerationList
from worker.core.models import Generation
from worker.storage.base import Storage
from worker.storage.fresh import fresh_generation, fresh_generations


def fresh_urls(storage: Storage) -> AfterRequestHookHandler:
    async def hook(response: Response[Any]) -> Response[Any]:
        if not storage.signs_urls:
            return response
        content = response.content
        if isinstance(content, Generation):
            response.content = await fresh_generation(storage, content)
        elif isinstance(content, GenerationList | CreatedGenerations):
            data = await fresh_generations(storage, content.data)
            response.content = msgspec.structs.replace(content, data=data)
        return response

    return hook
