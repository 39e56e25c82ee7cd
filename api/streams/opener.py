"""What every SSE route does once it has checked that the resource is visible: take one of the
principal's stream slots, subscribe to the resource's channel, and answer with the stream (kept
alive, its credential re-checked while it runs)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from litestar.response import Stream

from api.auth.keys import Principal, StreamCredential
from api.limits import StreamSlots
from api.streams.hub import Hub, Subscription
from api.streams.loop import Messages

# What Litestar's ServerSentEvent sends; the frames are ours (encoded once, written coalesced).
SSE_HEADERS = {"Cache-Control": "no-cache", "Connection": "keep-alive", "X-Accel-Buffering": "no"}


@dataclass(frozen=True, slots=True)
class StreamOpener:
    principal: Principal
    hub: Hub
    slots: StreamSlots
    max_streams: int
    keepalive_s: float
    credential: StreamCredential

    def open(self, channel: str, stream: Callable[[Subscription], Messages]) -> Stream:
        """429 when the principal holds SSE_MAX_STREAMS_PER_KEY streams already; else the
        stream `stream(subscription)` builds, holding its slot until it ends. The slot is taken
        just before subscribing, so nothing in between can leak it."""
        slot = self.slots.acquire(self.principal, self.max_streams)
        messages = stream(self.hub.subscribe(channel))
        return Stream(slot.hold(messages), media_type="text/event-stream", headers=SSE_HEADERS)
