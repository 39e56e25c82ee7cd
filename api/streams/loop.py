"""The one loop every SSE stream runs; each stream adds only what is its own (a `StreamLogic`).

The loop owns what all streams share:
- the initial state or replay (`start`), retried while the database is away, with a `waiting for
  the database` comment each time;
- waiting on the hub subscription, with a keep-alive comment when nothing happened for
  `keepalive_s` (or, when the stream asked for a shorter wait with `pending_s`, its `timed_out`);
- a notification (`notified`), and `resync` when the hub lost notifications;
- a database lost while the stream runs: `waiting for the database`, then a resync once the
  retry delay has passed (the client stays connected and nothing is lost);
- the server's shutdown: a last comment with a `retry:` hint, so clients reconnect elsewhere;
- the credential, checked again while the stream runs: once it no longer holds, the stream ends
  with an `unauthorized` event;
- coalescing: whatever the subscription has queued when the stream wakes is handled in one turn
  and goes out as one write, so a burst costs a subscriber one send, not one per event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing

import psycopg

from api.auth.keys import StreamCredential
from api.streams.encoding import sse_comment, sse_event
from api.streams.hub import RESYNC, SHUTDOWN, HubEvent, Subscription

logger = logging.getLogger(__name__)

# Encoded SSE frames (api/streams/encoding.py); one item may hold several.
Messages = AsyncGenerator[bytes, None]

DATABASE_RETRY_S = 1.0
# Sent while the database is away: the client stays connected and nothing is lost.
WAITING = sse_comment("waiting for the database")
KEEPALIVE = sse_comment("keepalive")
RECONNECT_MS = 1000
# The last message of a stream whose server is shutting down: reconnect (to the new instance).
RECONNECT = sse_comment("server restarting, reconnect", retry_ms=RECONNECT_MS)


class StreamLogic:
    """What one stream adds to the loop. Every hook yields the messages to send; a hook that
    raises psycopg.OperationalError is tried again (see the module's docstring), so a hook
    advances its position only as far as what it has yielded."""

    finished = False
    """True once the stream's last event went out (a generation's terminal event)."""

    async def start(self) -> Messages:
        """The initial state, or the replay after `Last-Event-ID`."""
        return
        yield

    async def notified(self, event: HubEvent) -> Messages:
        """A notification of the subscription."""
        return
        yield

    async def resync(self) -> Messages:
        """The hub lost notifications (or the database was away): re-read what was missed."""
        return
        yield

    def pending_s(self) -> float | None:
        """How long until `timed_out` is due if no notification comes, or None: nothing pending,
        keep-alive as usual."""
        return None

    async def timed_out(self) -> Messages:
        """`pending_s` passed without a notification."""
        return
        yield


async def _collect(step: Messages, out: list[bytes]) -> None:
    async with aclosing(step) as messages:
        async for message in messages:
            out.append(message)


def _step(logic: StreamLogic, item: HubEvent | None) -> Messages:
    if item is None:
        return logic.timed_out()
    if item is RESYNC:
        return logic.resync()
    return logic.notified(item)


async def _run(logic: StreamLogic, subscription: Subscription, keepalive_s: float) -> Messages:
    try:
        while True:
            out: list[bytes] = []
            try:
                await _collect(logic.start(), out)
            except psycopg.OperationalError:
                if out:
                    yield b"".join(out)
                yield WAITING
                await asyncio.sleep(DATABASE_RETRY_S)
                continue
            if out:
                yield b"".join(out)
            break
        while not logic.finished:
            pending = logic.pending_s()
            if pending is not None and pending <= 0:
                item = None
            else:
                item = await subscription.get(keepalive_s if pending is None else pending)
            if item is SHUTDOWN:
                yield RECONNECT
                return
            if item is None and pending is None:
                yield KEEPALIVE
                continue
            out = []
            try:
                await _collect(_step(logic, item), out)
                # Whatever else is queued now goes out in the same write.
                while not logic.finished:
                    queued = subscription.get_nowait()
                    if queued is None or queued is SHUTDOWN:
                        break  # SHUTDOWN: `closing` stays set, so the next turn sees it
                    await _collect(_step(logic, queued), out)
            except psycopg.OperationalError:
                # The database is away: keep the client; the next turn resyncs, after a pause.
                subscription.stale = True
                out.append(WAITING)
                yield b"".join(out)
                await asyncio.sleep(DATABASE_RETRY_S)
                continue
            if out:
                yield b"".join(out)
    finally:
        subscription.close()


async def _end_when_unauthorized(
    stream: Messages, subscription: Subscription, credential: StreamCredential
) -> Messages:
    """The stream, ended with an `unauthorized` event once its credential no longer holds (a
    revoked key, an expired token, a user who left the workspace)."""
    ended: list[bytes] = []

    async def watch() -> None:
        while not ended:
            await asyncio.sleep(credential.next_check_s())
            try:
                reason = await credential.check()
            except Exception:
                logger.exception("could not check a stream's credential again")
                continue
            if reason is not None:
                ended.append(sse_event("unauthorized", reason))
        subscription.shut_down()  # wakes the stream if it waits for a notification

    watcher = asyncio.create_task(watch())
    try:
        async for message in stream:
            if ended:
                break
            yield message
        if ended:
            yield ended[0]
    finally:
        watcher.cancel()
        await stream.aclose()


def stream_loop(
    logic: StreamLogic,
    subscription: Subscription,
    keepalive_s: float,
    credential: StreamCredential | None = None,
) -> Messages:
    """The messages of a stream; `subscription` is closed when it ends, however it ends."""
    stream = _run(logic, subscription, keepalive_s)
    if credential is None:
        return stream
    return _end_when_unauthorized(stream, subscription, credential)


__all__ = [
    "DATABASE_RETRY_S",
    "KEEPALIVE",
    "RECONNECT",
    "RECONNECT_MS",
    "WAITING",
    "Messages",
    "StreamLogic",
    "stream_loop",
]
