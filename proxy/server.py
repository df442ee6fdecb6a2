"""The running proxy: the listening sockets, the ticker, health checks, discovery, and a
graceful shutdown. The top of the I/O layer: it builds the records and the pool and
hands each accepted connection a `ClientConnection` (client.py).

Its listeners (listeners.py: plain and ssl) share one `Shared` record, one pool and one
`CertificateStore` (which SIGHUP reloads, __main__.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from netnames import Resolver, getaddrinfo_resolver
from proxy.access_log import AccessLog, open_access_log
from proxy.checker import check_health
from proxy.client import ClientConnection
from proxy.discovery import UpstreamDiscovery
from proxy.listeners import Listeners
from proxy.pool import ConnectionPool
from proxy.records import Shared, Upstream, UpstreamSet
from proxy.settings import ProxySettings
from proxy.status import StatusPages, snapshot
from proxy.status_stream import StatusStream
from proxy.tls import CertificateStore

# Seconds between looks at every deadline (a plain float per connection, no timers).
_TICK = 0.1


class ProxyServer:
    """`async with ProxyServer(settings) as proxy:` listens until closed."""

    def __init__(
        self,
        settings: ProxySettings,
        *,
        clock: Callable[[], float] = time.time,
        resolver: Resolver = getaddrinfo_resolver,
        store: CertificateStore | None = None,
    ) -> None:
        self.settings = settings
        self._resolver = resolver
        # The certificate of every ssl listener; made from the settings at start if not given.
        self.store = store
        self.upstreams = UpstreamSet(settings, clock)
        self._discovery_status: Callable[[], dict[str, Any]] = dict  # dns: upstreams only
        self._listeners = Listeners(settings)
        self._tasks: list[asyncio.Task[None]] = []
        self._shared: Shared | None = None
        self._pool: ConnectionPool | None = None
        self._stream = StatusStream(self.snapshot)
        self._access_log: AccessLog | None = None

    @property
    def port(self) -> int:
        """The port of the first `listen` entry (the one port of a single listener)."""
        return self.ports[0]

    @property
    def ports(self) -> tuple[int, ...]:
        """The port of every `listen` entry, in its order (port 0: the one chosen)."""
        return self._listeners.ports

    @property
    def ssl_port(self) -> int | None:
        """The port of the first ssl listener, where redirect_to_https points; None if none."""
        return self._listeners.ssl_port

    def snapshot(self) -> dict[str, Any]:
        """What status.json shows."""
        shared = self._shared
        return snapshot(
            self.upstreams,
            client_connections=len(shared.clients) if shared else 0,
            connections_accepted=shared.accepted if shared else 0,
            retries=shared.retries if shared else 0,
            **self._discovery_status(),
        )

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        settings = self.settings
        pages = StatusPages(settings.status_prefix, self.snapshot)
        shared = self._shared = Shared(
            self.upstreams, local_response=pages.respond, now=loop.time()
        )
        shared.pool = self._pool = ConnectionPool(shared)
        shared.access_log = self._access_log = open_access_log(
            settings.access_log, settings.log_format
        )
        shared.status_events_path = pages.events_path
        shared.subscribe_status = self._stream.subscribe
        await self._listeners.start(shared, self.store)
        self.store = self._listeners.store
        self._tasks.append(loop.create_task(self._tick()))
        if settings.health_interval > 0:
            for upstream in self.upstreams.by_name.values():
                self._tasks.append(loop.create_task(self._check(upstream)))
        # dns: upstreams come and go; their health checks run in the discovery task.
        if settings.discovery is not None:

            def routable_changed(count: int) -> None:
                shared.tries_limit = settings.tries_for(count)

            discovery = UpstreamDiscovery(
                self.upstreams,
                target=settings.discovery,
                resolver=self._resolver,
                on_change=routable_changed,
            )
            self._discovery_status = discovery.status
            self._tasks.append(loop.create_task(discovery.run()))

    async def _tick(self) -> None:
        shared, pool = self._shared, self._pool
        assert shared is not None and pool is not None
        loop = asyncio.get_running_loop()
        next_second = time.monotonic() + 1.0
        upstreams = self.upstreams
        while True:
            await asyncio.sleep(_TICK)
            now = shared.now = loop.time()
            for client in list(shared.clients):
                client.expire(now)
            pool.expire(now)
            if shared.access_log is not None:
                shared.access_log.flush()
            wall = upstreams.clock()
            for upstream in upstreams.by_name.values():
                if upstream.health.out_until:  # the end of a passive out-time, on time
                    upstream.health.tick(wall)
            if time.monotonic() >= next_second:
                next_second += 1.0
                for upstream in upstreams.by_name.values():
                    upstream.stats.sample_second(wall)

    async def _check(self, upstream: Upstream) -> None:
        settings = self.settings
        clock = self.upstreams.clock
        spec = upstream.spec
        while True:
            started = clock()
            check = await check_health(
                spec.host, spec.port, settings.health_path, settings.health_timeout, exact=False
            )
            now = clock()
            upstream.health.record_check(now, check.passed, check.reason, started=started)
            if not check.passed:
                upstream.stats.check_failures += 1
            elif check.report is not None:  # the app server's view, for the cluster page
                self.upstreams.cluster.reported(spec.name, check.report, now)
            await asyncio.sleep(settings.health_interval)

    async def close(self, grace: float = 5.0) -> None:
        """Stop accepting, let requests in flight finish (up to `grace` seconds), close all."""
        self._listeners.stop_accepting()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._stream.close()
        if self._access_log is not None:
            self._access_log.close()
        if self._shared is not None:
            await self._drain(self._shared, grace)
        await self._listeners.close()

    async def _drain(self, shared: Shared, grace: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        clients: set[ClientConnection] = shared.clients
        for client in list(clients):
            if not client.busy:
                client.close()
        # Polling (bounded by `grace`) keeps the hot path free of per-exchange signalling.
        while loop.time() < deadline and any(not client.closing for client in clients):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        if self._pool is not None:
            self._pool.close()
        for client in list(clients):
            client.abort()
        await asyncio.sleep(0)

    async def __aenter__(self) -> ProxyServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close(grace=1.0)
