"""Live updates of the status page: `<prefix>/status/events`, server-sent events.

A subscriber's connection gets the snapshot (status.json's document) at once and then
once a second, as `data:` lines, until it closes. One timer serves every subscriber,
and only while there are some; a subscriber that stops reading is dropped once its
unread updates pass a limit, and at most MAX_SUBSCRIBERS are served at once (others get
a 503), so stalled or hoarded pages never cost the proxy more than a bounded memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from proxy.status import render_json

_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n"
    b"X-Accel-Buffering: no\r\nConnection: close\r\n\r\n"
)
INTERVAL = 1.0  # seconds between updates
_UNREAD_LIMIT = 512 * 1024  # bytes a subscriber may leave unread before it is dropped
MAX_SUBSCRIBERS = 64  # pages open at once; the stream is for people watching, not crawlers
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Retry-After: 5\r\nContent-Length: 52\r\nConnection: close\r\n\r\n"
    b"503 Service Unavailable: too many status pages open\n"
)


class StatusStream:
    """The subscribers of the live updates and the timer that feeds them."""

    def __init__(self, current: Callable[[], Mapping[str, Any]]) -> None:
        self.current = current
        self.subscribers: set[asyncio.Transport] = set()
        self._timer: asyncio.TimerHandle | None = None

    def subscribe(self, transport: asyncio.Transport, head_only: bool = False) -> None:
        """Answer the request on `transport` with the stream (or only its head)."""
        if head_only:
            transport.write(_HEAD)
            transport.close()
            return
        self.subscribers = {t for t in self.subscribers if not t.is_closing()}
        if len(self.subscribers) >= MAX_SUBSCRIBERS:
            transport.write(_BUSY)
            transport.close()
            return
        transport.write(_HEAD + self._event())
        self.subscribers.add(transport)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(INTERVAL, self._publish)

    def _event(self) -> bytes:
        return b"data: " + render_json(self.current()) + b"\n\n"

    def _publish(self) -> None:
        self._timer = None
        for transport in list(self.subscribers):
            if transport.is_closing():
                self.subscribers.discard(transport)
            elif transport.get_write_buffer_size() > _UNREAD_LIMIT:
                self.subscribers.discard(transport)
                transport.abort()
        if not self.subscribers:
            return
        event = self._event()
        for transport in self.subscribers:
            transport.write(event)
        self._timer = asyncio.get_running_loop().call_later(INTERVAL, self._publish)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for transport in self.subscribers:
            transport.close()
        self.subscribers.clear()
