"""The upstream connection pool, as aiohttp's connector is: connects under
proxy_connect_timeout, keeps up to `keepalive` idle connections per upstream
(nginx's keepalive cache), retires them after keepalive_timeout.

A pooled connection is taken straight from `Upstream.idle` by the client side
(records.py), most recent first; this module makes new ones and takes them back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from proxy.records import Exchange, Shared, Upstream, UpstreamLink
from proxy.upstream import UpstreamConnection


class ConnectionPool:
    """Every upstream connection: making, keeping idle, expiring, closing."""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self.connections: set[UpstreamConnection] = set()
        self._connecting: set[asyncio.Task[None]] = set()

    def connect(
        self,
        upstream: Upstream,
        ex: Exchange,
        connected: Callable[[Exchange, UpstreamLink], None],
        failed: Callable[[Exchange, Upstream, str, str], None],
    ) -> None:
        """Open a new connection to `upstream` for `ex`; one of the callbacks follows."""
        task = asyncio.get_running_loop().create_task(
            self._connect(upstream, ex, connected, failed)
        )
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    async def _connect(
        self,
        upstream: Upstream,
        ex: Exchange,
        connected: Callable[[Exchange, UpstreamLink], None],
        failed: Callable[[Exchange, Upstream, str, str], None],
    ) -> None:
        spec, shared = upstream.spec, self.shared
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(shared.settings.proxy_connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: UpstreamConnection(shared, upstream, self.connections),
                    spec.host,
                    spec.port,
                )
        except TimeoutError:
            failed(ex, upstream, "timeout", "connect timed out")
        except ConnectionRefusedError:
            failed(ex, upstream, "refused", "connection refused")
        except OSError as error:
            failed(ex, upstream, "refused", f"connect failed: {error.strerror}")
        else:
            connected(ex, conn)

    def release(self, conn: UpstreamLink, *, reusable: bool) -> None:
        """Back to its upstream's idle list when it may carry another exchange."""
        conn = cast(UpstreamConnection, conn)  # the only kind there is
        idle = conn.idle
        shared = self.shared
        if reusable and not conn.closed and len(idle) < shared.keepalive:
            conn.detach()
            conn.idle_deadline = shared.now + shared.keepalive_timeout
            idle.append(conn)
        else:
            conn.close()

    def expire(self, now: float) -> None:
        for conn in list(self.connections):
            conn.expire(now)

    def close(self) -> None:
        for task in list(self._connecting):
            task.cancel()
        for conn in list(self.connections):
            conn.close()
