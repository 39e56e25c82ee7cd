"""Typed dependencies (Litestar DI) for what the app keeps in its State, which hands everything
out as Any. A route declares a parameter by its dependency's name and type (`pool: PoolDep`,
`hub: HubDep`, `settings: SettingsDep`, ...) and gets the process's one instance, typed."""

from __future__ import annotations

from typing import Any, TypeAlias

from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from psycopg_pool import AsyncConnectionPool

from api.auth.keys import Principal, StreamCredential
from api.auth.webhooks import FalVerifier
from api.limits import StreamSlots
from api.streams.hub import Hub
from worker.core.catalogue import Catalogue
from worker.core.config import Settings
from worker.storage.base import Storage


def provide_pool(state: State) -> AsyncConnectionPool:
    pool: AsyncConnectionPool = state.pool
    return pool


def provide_hub(state: State) -> Hub:
    hub: Hub = state.hub
    return hub


def provide_settings(state: State) -> Settings:
    settings: Settings = state.settings
    return settings


def provide_catalogue(state: State) -> Catalogue:
    catalogue: Catalogue = state.catalogue
    return catalogue


def provide_storage(state: State) -> Storage:
    storage: Storage = state.storage
    return storage


def provide_stream_slots(state: State) -> StreamSlots:
    slots: StreamSlots = state.stream_slots
    return slots


def provide_fal_verifier(state: State) -> FalVerifier:
    verifier: FalVerifier = state.fal_verifier
    return verifier


def provide_credential(request: Request[Principal, Any, Any], state: State) -> StreamCredential:
    """The credential of the request, to be checked again while its stream runs."""
    return StreamCredential(state, str(request.auth), request.user)


# The parameter types a route declares; the parameter's name picks the dependency.
PoolDep: TypeAlias = NamedDependency[AsyncConnectionPool]  # named `pool`
HubDep: TypeAlias = NamedDependency[Hub]  # named `hub`
SettingsDep: TypeAlias = NamedDependency[Settings]  # named `settings`
CatalogueDep: TypeAlias = NamedDependency[Catalogue]  # named `catalogue`
StorageDep: TypeAlias = NamedDependency[Storage]  # named `storage`
StreamSlotsDep: TypeAlias = NamedDependency[StreamSlots]  # named `stream_slots`
CredentialDep: TypeAlias = NamedDependency[StreamCredential]  # named `credential`
FalVerifierDep: TypeAlias = NamedDependency[FalVerifier]  # named `fal_verifier`

DEPENDENCIES: dict[str, Provide] = {
    "pool": Provide(provide_pool, sync_to_thread=False),
    "hub": Provide(provide_hub, sync_to_thread=False),
    "settings": Provide(provide_settings, sync_to_thread=False),
    "catalogue": Provide(provide_catalogue, sync_to_thread=False),
    "storage": Provide(provide_storage, sync_to_thread=False),
    "stream_slots": Provide(provide_stream_slots, sync_to_thread=False),
    "credential": Provide(provide_credential, sync_to_thread=False),
    "fal_verifier": Provide(provide_fal_verifier, sync_to_thread=False),
}
