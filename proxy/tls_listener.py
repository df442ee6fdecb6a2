"""The accept loop of a `listen ... ssl` port: it accepts, lets the HelloGate (tls_hello.py)
judge each connection's first record, and hands TLS ones to the event loop's own TLS
(`connect_accepted_socket(..., ssl=...)` with the CertificateStore's current context).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import socket
from collections.abc import Callable
from types import TracebackType

from proxy.tls import CertificateStore
from proxy.tls_hello import HelloGate

logger = logging.getLogger("proxy")

ProtocolFactory = Callable[[], asyncio.BaseProtocol]

_ACCEPT_RETRY = 1.0  # pause after EMFILE and the like, as asyncio's own servers do
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class TlsListener:
    """Listening sockets for one `listen host:port ssl`, shaped like asyncio.Server for a
    server's close path. Make one with `await TlsListener.start(...)`."""

    def __init__(
        self,
        sockets: list[socket.socket],
        protocol_factory: ProtocolFactory,
        store: CertificateStore,
        *,
        hello_timeout: float,
        handshake_timeout: float,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self.sockets = tuple(sockets)
        self._factory = protocol_factory
        self._store = store
        self._handshake_timeout = handshake_timeout
        self._gate = HelloGate(self._hand_off, hello_timeout=hello_timeout)
        self._handshakes: set[asyncio.Task[None]] = set()
        self._closed = self._loop.create_future()
        for listening in self.sockets:
            self._loop.add_reader(listening.fileno(), self._accept, listening)

    @classmethod
    async def start(
        cls,
        host: str | None,
        port: int,
        protocol_factory: ProtocolFactory,
        store: CertificateStore,
        *,
        hello_timeout: float = 1.0,
        handshake_timeout: float = 10.0,
        backlog: int = 1024,
        deferred_accept: bool = False,
    ) -> TlsListener:
        """Listen on every address `host` resolves to (None: all interfaces), port 0 = one
        free port for all of them. `hello_timeout` bounds the wait for the whole first
        record; `handshake_timeout` the TLS handshake after it. `deferred_accept` is nginx's
        `listen ... deferred` (Linux TCP_DEFER_ACCEPT): the kernel hands over a connection
        once its first bytes are in, which saves a wake-up per handshake; a silent client
        then waits in the kernel, which drops it after about `hello_timeout` and retries."""
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        sockets: list[socket.socket] = []
        try:
            for family, kind, proto, _, address in dict.fromkeys(infos):
                sock = socket.socket(family, kind, proto)
                sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    # As asyncio does: "::" then does not also take the IPv4 port.
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                if port == 0 and len(sockets) > 1:
                    address = (address[0], sockets[0].getsockname()[1], *address[2:])
                try:
                    sock.bind(address)
                except OSError as exc:
                    raise OSError(
                        exc.errno, f"cannot listen on {address!r}: {exc.strerror}"
                    ) from None
                if deferred_accept and hasattr(socket, "TCP_DEFER_ACCEPT"):
                    seconds = max(1, math.ceil(hello_timeout))
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, seconds)
                sock.listen(backlog)
                sock.setblocking(False)
        except BaseException:
            for sock in sockets:
                sock.close()
            raise
        return cls(
            sockets,
            protocol_factory,
            store,
            hello_timeout=hello_timeout,
            handshake_timeout=handshake_timeout,
        )

    @property
    def port(self) -> int:
        return int(self.sockets[0].getsockname()[1])

    def is_serving(self) -> bool:
        return not self._closed.done()

    def close(self) -> None:
        """Stop listening and drop connections not yet handed to a protocol (in the peek or
        in the TLS handshake); established connections belong to their protocols."""
        if self._closed.done():
            return
        self._closed.set_result(None)
        for listening in self.sockets:
            self._loop.remove_reader(listening.fileno())
            listening.close()
        self._gate.close()
        for task in self._handshakes:
            task.cancel()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)
        if self._handshakes:
            await asyncio.gather(*self._handshakes, return_exceptions=True)

    async def __aenter__(self) -> TlsListener:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
        await self.wait_closed()

    def _accept(self, listening: socket.socket) -> None:
        for _ in range(128):  # a burst per wake-up, yet other callbacks get their turn
            try:
                sock, _address = listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _OUT_OF_RESOURCES:
                    logger.error("TLS listener: cannot accept (%s); retrying in 1 s", exc)
                    self._loop.remove_reader(listening.fileno())
                    self._loop.call_later(_ACCEPT_RETRY, self._resume, listening)
                    return
                continue  # the client gave up before we took it (ECONNABORTED and kin)
            sock.setblocking(False)
            self._gate.admit(sock)

    def _resume(self, listening: socket.socket) -> None:
        if not self._closed.done():
            self._loop.add_reader(listening.fileno(), self._accept, listening)

    def _hand_off(self, sock: socket.socket) -> None:
        task = self._loop.create_task(self._handshake(sock))
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    async def _handshake(self, sock: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(
                self._factory,
                sock,
                ssl=self._store.context,
                ssl_handshake_timeout=self._handshake_timeout,
            )
        except OSError as exc:  # ssl.SSLError, the handshake timeout, a reset: the client's
            logger.debug("TLS handshake failed: %s", exc)
        except Exception:
            # The factory or connection_made raised; if no transport took the socket yet,
            # it is still ours to close (closing it twice is harmless).
            sock.close()
            logger.exception("TLS listener: the protocol of a new connection failed")
