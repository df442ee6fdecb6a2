"""The proxy's listening sockets: one `create_server` per plain `listen` entry, one
`TlsListener` (tls_listener.py) per `listen ... ssl` entry, each handing its connections
the listener's `Edge` (scheme, HSTS, where redirect_to_https points)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from proxy.client import ClientConnection, RedirectingConnection
from proxy.edge import Edge
from proxy.records import Shared
from proxy.settings import ProxySettings
from proxy.tls import CertificateStore
from proxy.tls_listener import TlsListener


class Listeners:
    """Every `listen` entry, in its order, once started."""

    def __init__(self, settings: ProxySettings) -> None:
        self.settings = settings
        self.store: CertificateStore | None = None
        self.servers: list[asyncio.Server | TlsListener] = []

    @property
    def ports(self) -> tuple[int, ...]:
        assert self.servers, "the proxy is not listening"
        return tuple(int(server.sockets[0].getsockname()[1]) for server in self.servers)

    @property
    def ssl_port(self) -> int | None:
        ports = [
            port
            for listener, port in zip(self.settings.listeners, self.ports, strict=True)
            if listener.ssl
        ]
        return ports[0] if ports else None

    async def start(self, shared: Shared, store: CertificateStore | None) -> None:
        """Listen on every entry (closing those already open if one fails). `store` is
        the ssl listeners' certificate, made from the settings when None."""
        try:
            await self._listen(shared, store)
        except BaseException:
            await self.close()
            raise

    async def _listen(self, shared: Shared, store: CertificateStore | None) -> None:
        """Every `listen` entry, ssl ones first: a redirecting plain listener needs the port
        of the first ssl listener (chosen by the system when it is 0)."""
        settings = self.settings
        listeners = settings.listeners
        servers: dict[int, asyncio.Server | TlsListener] = {}  # by index in `listen`
        if settings.ssl_listeners and store is None:
            store = CertificateStore(
                settings.ssl_certificate,
                settings.ssl_certificate_key,
                protocols=settings.ssl_protocols,
                ciphers=settings.ssl_ciphers,
            )
        self.store = store
        for index, listener in enumerate(listeners):
            if listener.ssl and store is not None:
                edge = Edge(https=True, hsts_max_age=settings.hsts_max_age)
                factory = self._factory(shared, edge)
                tls = await TlsListener.start(listener.host, listener.port, factory, store)
                servers[index] = tls
                self.servers.append(tls)
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
                self.servers.append(plain)
        self.servers = [servers[index] for index in range(len(listeners))]

    @staticmethod
    def _factory(shared: Shared, edge: Edge) -> Callable[[], ClientConnection]:
        """The protocol factory of one listener: its Edge is bound once, here."""
        if edge.redirect_port:
            return lambda: RedirectingConnection(shared, edge)
        return lambda: ClientConnection(shared, edge)

    def stop_accepting(self) -> None:
        for server in self.servers:
            server.close()

    async def close(self) -> None:
        servers, self.servers = self.servers, []
        for server in servers:
            server.close()
        for server in servers:
            await server.wait_closed()
