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
from api.streams.hub import Hub
from api.streams.opener import StreamOpener
from worker.core.catalogue import Catalogue
from worker.core.config import Settings
from worker.storage.base import Storage


def _from_state(name: str) -> Provide:
    """The process's one instance, kept in the app's State under `name`."""

    def provide(state: State) -> Any:
        return getattr(state, name)

    return Provide(provide, sync_to_thread=False)


def provide_credential(request: Request[Principal, Any, Any], state: State) -> StreamCredential:
    """The credential of the request, to be checked again while its stream runs."""
    return StreamCredential(state, str(request.auth), request.user)


def provide_streams(request: Request[Principal, Any, Any], state: State) -> StreamOpener:
    settings: Settings = state.settings
    return StreamOpener(
        request.user,
        state.hub,
        state.stream_slots,
        settings.sse_max_streams_per_key,
        settings.sse_keepalive_s,
        provide_credential(request, state),
    )


# The parameter types a route declares; the parameter's name picks the dependency.
PoolDep: TypeAlias = NamedDependency[AsyncConnectionPool]  # named `pool`
HubDep: TypeAlias = NamedDependency[Hub]  # named `hub`
SettingsDep: TypeAlias = NamedDependency[Settings]  # named `settings`
CatalogueDep: TypeAlias = NamedDependency[Catalogue]  # named `catalogue`
StorageDep: TypeAlias = NamedDependency[Storage]  # named `storage`
StreamsDep: TypeAlias = NamedDependency[StreamOpener]  # named `streams`
FalVerifierDep: TypeAlias = NamedDependency[FalVerifier]  # named `fal_verifier`

DEPENDENCIES: dict[str, Provide] = {
    **{
        name: _from_state(name)
        for name in (
            "pool",
            "hub",
            "settings",
            "catalogue",
            "storage",
            "fal_verifier",
        )
    },
    "streams": Provide(provide_streams, sync_to_thread=False),
}
