"""The stream loop on its own, without a database: a fake StreamLogic and a real subscription."""

from __future__ import annotations

import asyncio
from typing import cast

import psycopg
import pytest

from api.auth.keys import CredentialEnded, StreamCredential
from api.streams import loop
from api.streams.encoding import sse_event
from api.streams.hub import Hub, HubEvent, Subscription
from api.streams.loop import KEEPALIVE, RECONNECT, WAITING, Messages, StreamLogic, stream_loop


@pytest.fixture(autouse=True)
def no_retry_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loop, "DATABASE_RETRY_S", 0.0)


def _event(name: str) -> bytes:
    return sse_event(name, {})


class Script(StreamLogic):
    """Sends `start` first; a notification is echoed as its channel; `fail` OperationalErrors
    are raised by the next hooks first."""

    def __init__(self, fail_start: int = 0, fail_notified: int = 0) -> None:
        self.fail_start = fail_start
        self.fail_notified = fail_notified
        self.calls: list[str] = []

    async def start(self) -> Messages:
        self.calls.append("start")
        if self.fail_start:
            self.fail_start -= 1
            raise psycopg.OperationalError("database away")
        yield _event("start")

    async def notified(self, event: HubEvent) -> Messages:
        self.calls.append("notified")
        if self.fail_notified:
            self.fail_notified -= 1
            raise psycopg.OperationalError("database away")
        yield _event(event.channel)
        if event.payload.get("last"):
            self.finished = True

    async def resync(self) -> Messages:
        self.calls.append("resync")
        yield _event("resync")


def _subscription() -> tuple[Hub, Subscription]:
    hub = Hub("postgresql://unused")
    return hub, hub.subscribe("generation:x")


async def _take(stream: Messages, n: int) -> list[bytes]:
    return [await anext(stream) for _ in range(n)]


async def test_an_idle_stream_sends_keepalives() -> None:
    _, subscription = _subscription()
    stream = stream_loop(Script(), subscription, keepalive_s=0.01)
    assert await _take(stream, 3) == [_event("start"), KEEPALIVE, KEEPALIVE]
    await stream.aclose()


async def test_shutdown_asks_to_reconnect_ends_and_unsubscribes() -> None:
    hub, subscription = _subscription()
    stream = stream_loop(Script(), subscription, keepalive_s=60)
    assert await anext(stream) == _event("start")
    hub.shut_down_streams()
    assert await anext(stream) is RECONNECT
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    assert hub.subscriber_count == 0


async def test_the_stream_waits_for_the_database_to_start() -> None:
    _, subscription = _subscription()
    script = Script(fail_start=2)
    stream = stream_loop(script, subscription, keepalive_s=60)
    assert await _take(stream, 3) == [WAITING, WAITING, _event("start")]
    assert script.calls == ["start", "start", "start"]
    await stream.aclose()


async def test_a_database_lost_while_streaming_waits_then_resyncs() -> None:
    _, subscription = _subscription()
    script = Script(fail_notified=1)
    stream = stream_loop(script, subscription, keepalive_s=60)
    assert await anext(stream) == _event("start")
    subscription.offer(HubEvent(channel="one", payload={}))
    assert await _take(stream, 2) == [WAITING, _event("resync")]
    subscription.offer(HubEvent(channel="two", payload={}))
    assert await anext(stream) == _event("two")
    assert script.calls == ["start", "notified", "resync", "notified"]
    await stream.aclose()


async def test_a_hub_resync_reaches_the_stream() -> None:
    _, subscription = _subscription()
    stream = stream_loop(Script(), subscription, keepalive_s=60)
    assert await anext(stream) == _event("start")
    subscription.mark_stale()
    assert await anext(stream) == _event("resync")
    await stream.aclose()


async def test_what_is_queued_goes_out_in_one_write() -> None:
    _, subscription = _subscription()
    script = Script()
    stream = stream_loop(script, subscription, keepalive_s=60)
    assert await anext(stream) == _event("start")
    for channel in ("one", "two", "three"):
        subscription.offer(HubEvent(channel=channel, payload={}))
    assert await anext(stream) == _event("one") + _event("two") + _event("three")
    assert script.calls == ["start", "notified", "notified", "notified"]
    await stream.aclose()


async def test_a_burst_stops_at_the_stream_s_last_event() -> None:
    hub, subscription = _subscription()
    stream = stream_loop(Script(), subscription, keepalive_s=60)
    assert await anext(stream) == _event("start")
    subscription.offer(HubEvent(channel="done", payload={"last": True}))
    subscription.offer(HubEvent(channel="after", payload={}))
    assert await anext(stream) == _event("done")
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    assert hub.subscriber_count == 0


async def test_a_wait_times_out_once_per_deadline() -> None:
    """The subscription's one timer: a wait ends at its own deadline, not an earlier one's."""
    _, subscription = _subscription()
    assert await subscription.get(0.01) is None
    event = HubEvent(channel="one", payload={})
    subscription.offer(event)
    assert await subscription.get(0.01) is event
    long_wait = asyncio.ensure_future(subscription.get(0.2))
    await asyncio.sleep(0.05)
    assert not long_wait.done()  # an earlier, shorter deadline does not end a longer wait
    assert await long_wait is None
    subscription.close()


async def test_a_finished_stream_ends_and_unsubscribes() -> None:
    hub, subscription = _subscription()
    stream = stream_loop(Script(), subscription, keepalive_s=60)
    assert await anext(stream) == _event("start")
    subscription.offer(HubEvent(channel="done", payload={"last": True}))
    assert await anext(stream) == _event("done")
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    assert hub.subscriber_count == 0


class Polling(StreamLogic):
    """Asks to be woken after 10 ms: no keep-alive while something is pending."""

    def __init__(self) -> None:
        self.polls = 0

    def pending_s(self) -> float | None:
        return 0.01 if self.polls < 2 else None

    async def timed_out(self) -> Messages:
        self.polls += 1
        yield _event("poll")


async def test_a_pending_stream_is_woken_instead_of_kept_alive() -> None:
    _, subscription = _subscription()
    stream = stream_loop(Polling(), subscription, keepalive_s=0.05)
    assert await _take(stream, 3) == [_event("poll"), _event("poll"), KEEPALIVE]
    await stream.aclose()


class Revoked:
    def next_check_s(self) -> float:
        return 0.01

    async def check(self) -> CredentialEnded | None:
        return CredentialEnded("credential_revoked", "the API key was revoked")


async def test_a_stream_whose_credential_ends_says_unauthorized() -> None:
    hub, subscription = _subscription()
    credential = cast(StreamCredential, Revoked())
    stream = stream_loop(Script(), subscription, keepalive_s=60, credential=credential)
    first, last = await _take(stream, 2)
    assert first == _event("start")
    assert last.startswith(b"event: unauthorized\r\n")
    assert b'"code":"credential_revoked"' in last
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    assert hub.subscriber_count == 0
