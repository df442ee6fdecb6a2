"""The forwarding path: raw asyncio protocols on both sides, httptools for parsing.

One `ClientConnection` (client.py) per downstream socket parses requests and,
through its base `Relay` (relay.py), forwards them as `Exchange`s (exchange.py);
one `UpstreamConnection` (upstream.py) per upstream socket parses responses;
the lean path (lean.py) does the common exchange inline; the `Forwarder` here
holds what they share. Bodies go from one transport to the
other chunk by chunk as the parser hands them over, with flow control both ways
(a full write buffer pauses reading on the other side), so a body of any size
streams in bounded memory. Idle upstream connections wait in a per-upstream
keep-alive pool. Deadlines are plain floats checked by one ticker
(`Forwarder.tick`) instead of a timer per request.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from proxy.client import ClientConnection
from proxy.upstream import UpstreamConnection

if TYPE_CHECKING:
    from proxy.exchange import Exchange
    from proxy.relay import Relay
    from proxy.server import Upstream, UpstreamSet


class Forwarder:
    """Shared state of the forwarding path: upstreams, pools, clock, connections."""

    def __init__(self, upstreams: UpstreamSet, *, status_prefix: bytes) -> None:
        self.set = upstreams
        self.settings = upstreams.settings
        self.upstreams = upstreams.by_name
        self.balancer = upstreams.balancer
        self.clock = upstreams.clock
        self.sticky = self.settings.policy == "sticky"
        self.cookie_name = self.settings.session_cookie_name
        # A request without these bytes carries no session cookie.
        self.cookie_marker = self.cookie_name.encode("latin-1")
        self.real_ip_header = self.settings.real_ip_header.lower().encode()
        self.tries_limit = self.settings.tries_limit
        self.read_timeout = self.settings.proxy_read_timeout
        self.keepalive_timeout = self.settings.keepalive_timeout
        self.keepalive = self.settings.keepalive
        self.status_prefix = status_prefix
        self.connections: set[asyncio.Protocol] = set()
        self.loop = asyncio.get_running_loop()
        self.now = self.loop.time()
        self.retries = 0
        self._connecting: set[asyncio.Task[None]] = set()
        self.local_response = upstreams.local_response

    def note_failure(self, upstream: Upstream, cause: str) -> None:
        self.set.note_failure(upstream, cause)

    def connect(self, client: Relay, ex: Exchange, upstream: Upstream) -> None:
        task = self.loop.create_task(self._connect(client, ex, upstream))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    async def _connect(self, client: Relay, ex: Exchange, upstream: Upstream) -> None:
        spec = upstream.spec
        try:
            async with asyncio.timeout(self.settings.proxy_connect_timeout):
                _, conn = await self.loop.create_connection(
                    lambda: UpstreamConnection(self, upstream), spec.host, spec.port
                )
        except TimeoutError:
            client.connect_failed(ex, upstream, "timeout", "connect timed out")
        except ConnectionRefusedError:
            client.connect_failed(ex, upstream, "refused", "connection refused")
        except OSError as error:
            client.connect_failed(ex, upstream, "refused", f"connect failed: {error.strerror}")
        else:
            client.connected(ex, conn)

    def release(self, conn: UpstreamConnection, *, reusable: bool) -> None:
        idle = conn.upstream.idle
        if reusable and not conn.closed and len(idle) < self.settings.keepalive:
            conn.client = None
            conn.idle_deadline = self.now + self.settings.keepalive_timeout
            idle.append(conn)
        else:
            conn.close()

    def tick(self) -> None:
        """Check every deadline; run a few times a second."""
        now = self.now = self.loop.time()
        for conn in list(self.connections):
            conn.expire(now)  # type: ignore[attr-defined]

    async def close(self, grace: float) -> None:
        """Let busy client connections finish (up to `grace` seconds), then close all."""
        deadline = self.loop.time() + grace
        for conn in list(self.connections):
            if isinstance(conn, ClientConnection) and conn.active is None:
                conn.close()
        # Polling (bounded by `grace`) keeps the hot path free of per-exchange signalling.
        while self.loop.time() < deadline and any(  # noqa: ASYNC110
            isinstance(conn, ClientConnection) and not conn.closing for conn in self.connections
        ):
            await asyncio.sleep(0.05)
        for task in list(self._connecting):
            task.cancel()
        for conn in list(self.connections):
            if isinstance(conn, ClientConnection):
                if conn.transport is not None:
                    conn.transport.abort()
            elif isinstance(conn, UpstreamConnection):
                conn.close()
        await asyncio.sleep(0)
