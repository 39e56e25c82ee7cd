"""GET /v1/models: the model catalogue, so clients pick a served model and see what is going."""

from __future__ import annotations

import msgspec
from litestar import get

from api.deps import PoolDep
from worker.core.catalogue import ModelEntry, list_models


class ModelList(msgspec.Struct):
    data: list[ModelEntry]


@get("/v1/models", summary="The model catalogue: status, shutdown dates, defaults", tags=["models"])
async def models(pool: PoolDep) -> ModelList:
    return ModelList(data=await list_models(pool))
