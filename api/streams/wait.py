"""`Prefer: wait=N` on creation (RFC 7240, as Replicate's API has it): answer with the finished
generation when it ends within N seconds, else with its state then. Waiting rides on the
process's one LISTEN connection (the hub); the client going away cancels only the wait."""

from __future__ import annotations

import asyncio

from psycopg_pool import AsyncConnectionPool

from api.streams.hub import SHUTDOWN, Hub
from worker.core import store
from worker.core.models import TERMINAL_STATUSES, Generation

# Re-read at least this often, whatever the notifications say (a lost LISTEN connection).
RECHECK_S = 1.0


async def wait_until_done(
    hub: Hub, pool: AsyncConnectionPool, generation: Generation, seconds: float
) -> Generation:
    """The generation once terminal, or as it stands when `seconds` have passed."""
    if generation.status in TERMINAL_STATUSES or seconds <= 0:
        return generation
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    subscription = hub.subscribe(f"generation:{generation.id}")
    try:
        current, ending = generation, False
        while True:
            read = await store.get_generation(pool, generation.id, generation.workspace_id)
            current = read or current
            remaining = deadline - loop.time()
            if current.status in TERMINAL_STATUSES or remaining <= 0 or read is None or ending:
                return current
            # Any news of it (or a resync, or the periodic re-check) means: read it again.
            ending = await subscription.get(min(remaining, RECHECK_S)) is SHUTDOWN
    finally:
        subscription.close()


async def generation_when_done(
    hub: Hub, pool: AsyncConnectionPool, generation: Generation, wait_s: int | None
) -> tuple[Generation, dict[str, str]]:
    """(the generation to answer with, headers): `Preference-Applied` only when it finished."""
    if wait_s is None:
        return generation, {}
    done = await wait_until_done(hub, pool, generation, wait_s)
    if done.status in TERMINAL_STATUSES:
        return done, {"Preference-Applied": f"wait={wait_s}"}
    return done, {}


async def generations_when_done(
    hub: Hub, pool: AsyncConnectionPool, generations: list[Generation], wait_s: int | None
) -> tuple[list[Generation], dict[str, str]]:
    """The same for a batch, within one deadline: `Preference-Applied` when all finished."""
    if wait_s is None:
        return generations, {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    done = [
        await wait_until_done(hub, pool, generation, max(0.0, deadline - loop.time()))
        for generation in generations
    ]
    if all(generation.status in TERMINAL_STATUSES for generation in done):
        return done, {"Preference-Applied": f"wait={wait_s}"}
    return done, {}
