"""One LISTEN connection per API process, fanned out in memory to SSE subscribers.

Each subscriber has a bounded queue: a slow client never blocks the hub or the others. When a
queue overflows, or the LISTEN connection drops, the subscriber is marked stale and its stream
re-reads what it missed from image_events (events carry increasing ids, so nothing is sent twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Iterator
from typing import Any, Final

import msgspec
import psycopg

logger = logging.getLogger(__name__)

GENERATION_CHANNEL: Final = "image_generation_events"
PROJECT_CHANNEL: Final = "project_status"
QUEUE_SIZE: Final = 256


class HubEvent(msgspec.Struct, frozen=True):
    channel: str
    payload: dict[str, Any]


RESYNC: Final = HubEvent(channel="", payload={})
# The process is shutting down: streams tell their clients to reconnect (elsewhere) and end.
SHUTDOWN: Final = HubEvent(channel="", payload={"shutdown": True})


class Subscription:
    def __init__(self, hub: Hub, keys: tuple[str, ...], maxsize: int = QUEUE_SIZE) -> None:
        self.hub = hub
        self.keys = keys
        self.queue: asyncio.Queue[HubEvent] = asyncio.Queue(maxsize)
        self.stale = False
        self.closing = False

    def offer(self, event: HubEvent) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.stale = True

    def mark_stale(self) -> None:
        self.stale = True
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(RESYNC)

    def shut_down(self) -> None:
        self.closing = True
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(SHUTDOWN)

    async def get(self, timeout: float) -> HubEvent | None:
        """The next event, RESYNC when the stream must re-read the database, SHUTDOWN when the
        process is stopping, None on timeout."""
        if self.closing:
            return SHUTDOWN
        if self.stale:
            self.stale = False
            return RESYNC
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that races
        # with a queue item, and a disconnected client's stream would then never end.
        try:
            async with asyncio.timeout(timeout):
                return await self.queue.get()
        except TimeoutError:
            return None

    def close(self) -> None:
        self.hub.unsubscribe(self)


class Hub:
    def __init__(self, database_url: str, *, reconnect_delay: float = 0.5) -> None:
        self.database_url = database_url
        self.reconnect_delay = reconnect_delay
        self.connected = asyncio.Event()
        self._subscribers: dict[str, set[Subscription]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self.notifications = 0

    @property
    def subscriber_count(self) -> int:
        return len({s for subs in self._subscribers.values() for s in subs})

    def subscribe(self, *keys: str) -> Subscription:
        """Keys are "generation:<id>", "project:<id>", "workflow:<id>" or "workspace:<id>"."""
        subscription = Subscription(self, keys)
        for key in keys:
            self._subscribers[key].add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        for key in subscription.keys:
            subs = self._subscribers.get(key)
            if subs is not None:
                subs.discard(subscription)
                if not subs:
                    del self._subscribers[key]

    def shut_down_streams(self) -> None:
        """Called when the server starts its graceful shutdown: every stream ends now, with a
        `retry:` hint, instead of holding the old process until the graceful timeout."""
        for subscription in self._all():
            subscription.shut_down()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="imagejobs-hub")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connected.wait(), 10)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for subscription in self._all():
            subscription.mark_stale()

    @property
    def backend_pid(self) -> int | None:
        """The server pid of the LISTEN connection (operators and tests can terminate it)."""
        return self._conn.info.backend_pid if self._conn is not None else None

    def _all(self) -> Iterator[Subscription]:
        return iter({s for subs in self._subscribers.values() for s in subs})

    def dispatch(self, channel: str, raw: str) -> None:
        self.notifications += 1
        try:
            payload = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            logger.warning("ignoring a malformed notification on %s", channel)
            return
        if not isinstance(payload, dict):
            return
        event = HubEvent(channel=channel, payload=payload)
        targets: set[Subscription] = set()
        if channel == GENERATION_CHANNEL:
            targets |= self._subscribers.get(f"generation:{payload.get('generation_id')}", set())
        targets |= self._subscribers.get(f"project:{payload.get('project_id')}", set())
        targets |= self._subscribers.get(f"workspace:{payload.get('workspace_id')}", set())
        if payload.get("workflow_id"):
            targets |= self._subscribers.get(f"workflow:{payload['workflow_id']}", set())
        for subscription in targets:
            subscription.offer(event)

    async def _run(self) -> None:
        first = True
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.database_url, autocommit=True
                ) as conn:
                    self._conn = conn
                    await conn.execute(f"LISTEN {GENERATION_CHANNEL}")
                    await conn.execute(f"LISTEN {PROJECT_CHANNEL}")
                    if not first:
                        # Whatever was committed while we were away is only in image_events.
                        for subscription in self._all():
                            subscription.mark_stale()
                    first = False
                    self.connected.set()
                    logger.info("hub listening (backend pid %s)", conn.info.backend_pid)
                    async for notify in conn.notifies():
                        self.dispatch(notify.channel, notify.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("hub connection lost (%s); reconnecting", type(exc).__name__)
            finally:
                self._conn = None
                self.connected.clear()
            await asyncio.sleep(self.reconnect_delay)
