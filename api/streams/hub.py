"""One LISTEN connection per API process, fanned out in memory to SSE subscribers.

Each subscriber has a bounded inbox: a slow client never blocks the hub or the others. When a
queue overflows, or the LISTEN connection drops, the subscriber is marked stale and its stream
re-reads what it missed from image_events (events carry increasing ids, so nothing is sent twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from typing import Any, Final, TypeVar, cast

import msgspec
import psycopg

logger = logging.getLogger(__name__)

GENERATION_CHANNEL: Final = "image_generation_events"
PROJECT_CHANNEL: Final = "project_status"
QUEUE_SIZE: Final = 256

T = TypeVar("T")


class HubEvent(msgspec.Struct, frozen=True):
    channel: str
    payload: dict[str, Any]
    # What streams derive from the event (its decoded form, its encoded frame), made once for
    # every subscriber: per-subscriber work stays off the fan-out's hot path.
    derived: dict[str, Any] = msgspec.field(default_factory=dict)

    def shared(self, name: str, make: Callable[[HubEvent], T]) -> T:
        """`make(self)`, computed by the first subscriber that asks and reused by the rest."""
        try:
            return cast(T, self.derived[name])
        except KeyError:
            value = self.derived[name] = make(self)
            return value


RESYNC: Final = HubEvent(channel="", payload={})
# The process is shutting down: streams tell their clients to reconnect (elsewhere) and end.
SHUTDOWN: Final = HubEvent(channel="", payload={"shutdown": True})


class Subscription:
    """A stream's inbox: a bounded deque and at most one waiter (the stream itself). Cheaper
    than an asyncio.Queue on the fan-out's hot path, where every event wakes every subscriber."""

    def __init__(self, hub: Hub, keys: tuple[str, ...], maxsize: int = QUEUE_SIZE) -> None:
        self.hub = hub
        self.keys = keys
        self.queue: deque[HubEvent] = deque()
        self.maxsize = maxsize
        self.stale = False
        self.closing = False
        self._waiter: asyncio.Future[None] | None = None
        # One lazily re-armed timer per subscription, not one per wait: a wait only moves the
        # deadline; the timer, when it fires early, re-arms itself once for the new deadline.
        # When it fires is kept here: uvloop hands back a plain Handle, without `when()`, for a
        # time under half a millisecond away.
        self._deadline = 0.0
        self._timer: asyncio.Handle | None = None
        self._timer_at = 0.0

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def offer(self, event: HubEvent) -> None:
        if len(self.queue) >= self.maxsize:
            self.stale = True  # the stream re-reads what it missed from the database
        else:
            self.queue.append(event)
        self._wake()

    def mark_stale(self) -> None:
        self.stale = True
        self._wake()

    def shut_down(self) -> None:
        self.closing = True
        self._wake()

    def get_nowait(self) -> HubEvent | None:
        """The next event (RESYNC, SHUTDOWN as `get`), or None when nothing is queued."""
        if self.closing:
            return SHUTDOWN
        if self.stale:
            self.stale = False
            return RESYNC
        return self.queue.popleft() if self.queue else None

    async def get(self, timeout: float) -> HubEvent | None:
        """The next event, RESYNC when the stream must re-read the database, SHUTDOWN when the
        process is stopping, None on timeout."""
        item = self.get_nowait()
        if item is not None:
            return item
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + timeout
        if self._timer is None or self._timer_at > self._deadline:
            if self._timer is not None:
                self._timer.cancel()
            self._arm(loop)
        while True:
            self._waiter = loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
            item = self.get_nowait()
            if item is not None:
                return item
            if loop.time() >= self._deadline:
                return None

    def _expire(self) -> None:
        self._timer = None
        if self._waiter is None:
            return  # the next wait arms a timer of its own
        loop = asyncio.get_running_loop()
        if loop.time() >= self._deadline:
            self._wake()
        else:
            self._arm(loop)

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = loop.call_at(self._deadline, self._expire)
        self._timer_at = self._deadline

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
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
