"""The running proxy: the listening sockets, the ticker, health checks, discovery, and a
graceful shutdown. The top of the I/O layer: it builds the records and the pool and
hands each accepted connection a `ClientConnection` (client.py).

One `create_server` per plain `listen` entry, one `TlsListener` (tls_listener.py) per
`listen ... ssl` entry, all sharing one `Shared` record, one pool and one
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
from proxy.client import ClientConnection, RedirectingConnection
from proxy.discovery import UpstreamDiscovery
from proxy.edge import Edge
from proxy.pool import ConnectionPool
from proxy.records import Shared, Upstream, UpstreamSet
from proxy.settings import ProxySettings
from proxy.status import StatusPages, snapshot
from proxy.status_stream import StatusStream
from proxy.tls import CertificateStore
from proxy.tls_listener import TlsListener

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
        # One per `listen` entry, in its order (a TlsListener for each ssl one).
        self._servers: list[asyncio.Server | TlsListener] = []
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
        assert self._servers, "the proxy is not listening"
        return tuple(int(server.sockets[0].getsockname()[1]) for server in self._servers)

    @property
    def ssl_port(self) -> int | None:
        """The port of the first ssl listener, where redirect_to_https points; None if none."""
        ports = [
            port
            for listener, port in zip(self.settings.listeners, self.ports, strict=True)
            if listener.ssl
        ]
        return ports[0] if ports else None

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
        try:
            await self._listen(shared)
        except BaseException:
            await self._close_listeners()
            raise
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

    async def _listen(self, shared: Shared) -> None:
        """Every `listen` entry, ssl ones first: a redirecting plain listener needs the port
        of the first ssl listener (chosen by the system when it is 0)."""
        settings = self.settings
        listeners = settings.listeners
        servers: dict[int, asyncio.Server | TlsListener] = {}  # by index in `listen`
        if settings.ssl_listeners and self.store is None:
            self.store = CertificateStore(
                settings.ssl_certificate,
                settings.ssl_certificate_key,
                protocols=settings.ssl_protocols,
                ciphers=settings.ssl_ciphers,
            )
        store = self.store
        for index, listener in enumerate(listeners):
            if listener.ssl and store is not None:
                edge = Edge(https=True, hsts_max_age=settings.hsts_max_age)
                factory = self._factory(shared, edge)
                tls = await TlsListener.start(listener.host, listener.port, factory, store)
                servers[index] = tls
                self._servers.append(tls)
        redirect_port = 0
        if settings.redirect_to_https and servers:
            redirect_port = int(servers[min(servers)].sockets[0].getsockname()[1])
        loop = asyncio.get_running_loop()
        for index, listener in enumerate(listeners):
            if not listener.ssl:
                edge = Edge(https=False, redirect_port=redirect_port)
                plain = await loop.create_server(
                    self._factory(shared, edge),
                    listener.host,
                    listener.port,
                    reuse_address=True,
                    backlog=1024,
                )
                servers[index] = plain
                self._servers.append(plain)
        self._servers = [servers[index] for index in range(len(listeners))]

    @staticmethod
    def _factory(shared: Shared, edge: Edge) -> Callable[[], ClientConnection]:
        """The protocol factory of one listener: its Edge is bound once, here."""
        if edge.redirect_port:
            return lambda: RedirectingConnection(shared, edge)
        return lambda: ClientConnection(shared, edge)

    async def _close_listeners(self) -> None:
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        for server in servers:
            await server.wait_closed()

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
        for server in self._servers:
            server.close()
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
        await self._close_listeners()

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
