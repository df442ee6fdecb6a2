"""The client side of forwarding: one downstream connection and its requests.

Requests are taken whole by the lean path (lean.py) or the fast path when they
are plain and arrive in one read, else parsed by httptools' llhttp parser;
they are checked (size limits, framing, bad input gives a 4xx) and handed to
the exchange machinery of `Relay` (relay.py), which forwards and answers them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, cast

import httptools

from proxy.balancer import route_of_request
from proxy.errors import BadRequestError
from proxy.exchange import Exchange
from proxy.lean import take_request
from proxy.message import error_response, prepare_request
from proxy.relay import Relay
from proxy.settings import inside
from proxy.wire import (
    BODY_OR_UPGRADE,
    CHUNK_END,
    HEADER_FIELD,
    LEAN_REQUEST,
    LEAN_REQUEST_MAX,
    MAX_HEADER_BYTES,
    MAX_TARGET,
    OTHER_PROTOCOL,
    SIMPLE_REQUEST,
    WRITE_HIGH,
)

if TYPE_CHECKING:
    from proxy.forward import Forwarder

logger = logging.getLogger("proxy")

_BODY_BUFFER_HIGH = 256 * 1024


class ClientConnection(Relay):
    """One downstream connection: parses requests, forwards them, writes responses."""

    def __init__(self, forwarder: Forwarder) -> None:
        super().__init__(forwarder)
        self.parser = httptools.HttpRequestParser(self)
        self.client_ip = b""
        self.real_ip_header: bytes | None = None
        self.forwarded_tail = b""
        self.target_parts: list[bytes] = []
        self.target_size = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.header_bytes = 0
        self.in_head = True
        self.parsing: Exchange | None = None
        self.to_dispatch: Exchange | None = None

    # -- asyncio callbacks -----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH)
        peer = transport.get_extra_info("peername")
        ip = self.client_ip = (peer[0] if peer else "unknown").encode()
        forwarder = self.forwarder
        trusted = forwarder.settings.set_real_ip_from
        # Set only for a peer that may name the client (nginx's set_real_ip_from).
        self.real_ip_header = (
            forwarder.real_ip_header if trusted and inside(ip.decode(), trusted) else None
        )
        # The end of every lean request head for the upstream (after X-Forwarded-Host).
        self.forwarded_tail = b"".join(
            (
                b"\r\nX-Forwarded-For: ",
                ip,
                b"\r\nX-Forwarded-Proto: http\r\nX-Real-IP: ",
                ip,
                b"\r\n\r\n",
            )
        )
        forwarder = self.forwarder
        forwarder.connections.add(self)
        self.read_deadline = forwarder.now + forwarder.settings.client_header_timeout

    def data_received(self, data: bytes) -> None:
        tunnel = self.tunnel_to
        if tunnel is not None:
            tunnel.read_deadline = self.forwarder.now + self.forwarder.read_timeout
            tunnel.send(data)
            return
        if self.closing:
            return
        if self.in_head and not self.header_bytes and self.active is None:
            # The lean path: a whole plain request, nothing after it.
            if len(data) <= LEAN_REQUEST_MAX:
                match = LEAN_REQUEST.fullmatch(data)
                if match is not None and take_request(self, data, match):
                    return
            # Fast path: one whole body-less request in one read, nothing after it.
            match = SIMPLE_REQUEST.fullmatch(data)
            if match is not None and BODY_OR_UPGRADE.search(data, match.start(3)) is None:
                try:
                    self._fast_request(match.group(1), match.group(2), match.group(3))
                except BadRequestError as error:
                    self.reject(error.status, error.reason)
                return
        if self.in_head:
            self.header_bytes += len(data)
            # llhttp also takes RTSP and ICE request lines; this proxy speaks HTTP only.
            if (b"TSP/" in data or b"ICE/" in data) and OTHER_PROTOCOL.search(data):
                self.reject(400, "not an HTTP request")
                return
        else:
            self.read_deadline = self.forwarder.now + self.forwarder.settings.client_body_timeout
        try:
            self.parser.feed_data(data)
            ex = self.to_dispatch
            if ex is not None:
                self.to_dispatch = None
                if ex is self.active and not self.closing:
                    self._dispatch(ex)
        except httptools.HttpParserUpgrade as upgrade:
            # Bytes after an upgrade request belong to the tunnel, once the upstream agrees.
            rest = data[upgrade.args[0] :]
            ex = self.to_dispatch
            if ex is not None:
                self.to_dispatch = None
                if ex is self.active and not self.closing:
                    self._dispatch(ex)
            ex = self.active
            if ex is not None and not ex.tunnel:
                self.paused_for_upstream = True
                self.update_reading()
            if ex is not None and rest:
                if ex.tunnel and ex.conn is not None:
                    ex.conn.send(rest)
                else:
                    ex.body_chunks.append(rest)
            return
        except httptools.HttpParserInvalidMethodError:
            self.reject(400, "invalid method")
            return
        except httptools.HttpParserError as error:
            cause = error.__context__
            if isinstance(cause, BadRequestError):
                self.reject(cause.status, cause.reason)
            elif not self.closing:
                if cause is not None:
                    logger.error("bug while handling a request", exc_info=cause)
                self.reject(400, str(error) or "malformed request")
            return
        # Headers still incomplete after this many bytes: nginx's 431/400 case.
        if self.in_head and self.header_bytes > MAX_HEADER_BYTES and not self.closing:
            self.reject(431, "request header too large")

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.forwarder.connections.discard(self)
        for ex in (self.active, *self.queue):
            if ex is not None and ex.conn is not None:
                self._drop_upstream(ex, reusable=False)
        tunnel = self.tunnel_to
        if tunnel is not None:
            tunnel.close()
        self.active = None
        self.queue.clear()

    def pause_writing(self) -> None:
        # A client that reads slowly answers for itself (send_timeout): the upstream we
        # stop reading from is not late meanwhile.
        self.writing_paused = True
        self.send_deadline = self.forwarder.now + self.forwarder.settings.send_timeout
        ex = self.active
        conn = ex.conn if ex is not None else self.tunnel_to
        if conn is not None and conn.transport is not None and not conn.closed:
            conn.read_deadline = 0.0
            conn.transport.pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        self.send_deadline = 0.0
        ex = self.active
        conn = ex.conn if ex is not None else self.tunnel_to
        if conn is not None and conn.transport is not None and not conn.closed:
            conn.read_deadline = self.forwarder.now + self.forwarder.read_timeout
            conn.transport.resume_reading()

    # -- httptools callbacks ---------------------------------------------------
    def on_message_begin(self) -> None:
        if self.active is None:
            self.read_deadline = self.forwarder.now + self.forwarder.settings.client_header_timeout

    def on_url(self, url: bytes) -> None:
        self.target_size += len(url)
        if self.target_size > MAX_TARGET:
            raise BadRequestError(414, "request line too long")
        self.target_parts.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        self.in_head = False
        if self.header_bytes > MAX_HEADER_BYTES:
            # Counted reads may include body bytes: measure the head exactly.
            size = sum(len(name) + len(value) + 4 for name, value in self.headers)
            if size > MAX_HEADER_BYTES:
                raise BadRequestError(431, "request header too large")
        self.header_bytes = 0
        forwarder = self.forwarder
        settings = forwarder.settings
        self.read_deadline = forwarder.now + settings.client_body_timeout
        parts = self.target_parts
        target = parts[0] if len(parts) == 1 else b"".join(parts)
        headers = self.headers
        self.target_parts = []
        self.target_size = 0
        self.headers = []
        version = parser.get_http_version()
        if version not in ("1.1", "1.0"):
            raise BadRequestError(505, f"HTTP/{version} is not supported")
        ex = Exchange(parser.get_method(), target, version == "1.1", parser.should_keep_alive())
        self.parsing = ex
        if target.startswith(forwarder.status_prefix):
            ex.local = True
        else:
            prepared = prepare_request(
                ex.method,
                target,
                headers,
                http_version=version,
                upgrade=parser.should_upgrade(),
                client_ip=self.client_ip,
                max_body_size=settings.client_max_body_size,
                default_host=self.server_host() if version == "1.0" else b"",
                real_ip_header=self.real_ip_header,
            )
            ex.prepared = prepared
            ex.head = prepared.head
            ex.lean = ex.http11 and ex.keep_alive and not ex.head_only and not prepared.upgrade
            if forwarder.sticky:
                ex.route = route_of_request(
                    target.decode("latin-1"), prepared.cookies, settings.session_cookie_name
                )
            ex.expect_continue = prepared.expect_continue and ex.http11
        if self.active is None:
            self.active = ex
            if not ex.local:
                # Dispatched once this read is parsed, so that body bytes that came with
                # the head are checked (client_max_body_size) before anything is sent.
                self.to_dispatch = ex
        else:
            self.queue.append(ex)
            self.paused_for_queue = True
            self.update_reading()

    def server_host(self) -> bytes:
        """host:port the client reached: the Host of an HTTP/1.0 request that has none."""
        local = self.transport.get_extra_info("sockname") if self.transport else None
        if not isinstance(local, tuple):
            return b""
        host = f"[{local[0]}]" if ":" in local[0] else local[0]
        return f"{host}:{local[1]}".encode()

    def _fast_request(self, method: bytes, target: bytes, block: bytes) -> None:
        """A request the fast path parsed itself: same checks, no parser callbacks."""
        headers = HEADER_FIELD.findall(block)
        if len(block) > MAX_HEADER_BYTES:
            raise BadRequestError(431, "request header too large")
        if len(target) > MAX_TARGET:
            raise BadRequestError(414, "request line too long")
        forwarder = self.forwarder
        ex = Exchange(method, target, True, True)
        ex.request_complete = True
        self.read_deadline = 0.0
        self.active = ex
        if target.startswith(forwarder.status_prefix):
            ex.local = True
            for name, value in headers:
                if name.lower() == b"connection" and b"close" in value.lower():
                    ex.keep_alive = False
            self._answer_locally(ex)
            return
        settings = forwarder.settings
        prepared = prepare_request(
            method,
            target,
            headers,
            http_version="1.1",
            upgrade=False,
            client_ip=self.client_ip,
            max_body_size=settings.client_max_body_size,
            real_ip_header=self.real_ip_header,
        )
        ex.prepared = prepared
        ex.head = prepared.head
        ex.keep_alive = not prepared.close_requested
        ex.lean = ex.keep_alive and not ex.head_only
        if forwarder.sticky:
            ex.route = route_of_request(
                target.decode("latin-1"), prepared.cookies, settings.session_cookie_name
            )
        self._dispatch(ex)

    def on_body(self, body: bytes) -> None:
        ex = self.parsing
        if ex is None or ex.local:
            return
        ex.body_size += len(body)
        limit = self.forwarder.settings.client_max_body_size
        if limit and ex.body_size > limit:
            raise BadRequestError(413, "request body larger than client_max_body_size")
        assert ex.prepared is not None
        chunk = b"%x\r\n%b\r\n" % (len(body), body) if ex.prepared.chunked else body
        conn = ex.conn
        if conn is not None and ex is self.active:
            conn.send(chunk)
        else:
            ex.body_chunks.append(chunk)
            ex.buffered += len(chunk)
            if ex.buffered > _BODY_BUFFER_HIGH:
                self.paused_for_upstream = True
                self.update_reading()

    def on_message_complete(self) -> None:
        ex = self.parsing
        self.parsing = None
        self.in_head = True
        if ex is None:
            return
        ex.request_complete = True
        if ex is self.active:
            self.read_deadline = 0.0
            if ex.conn is not None and not self.writing_paused:
                ex.conn.read_deadline = self.forwarder.now + self.forwarder.read_timeout
        if ex.local:
            if ex is self.active:
                self._answer_locally(ex)
            return
        assert ex.prepared is not None
        if ex.prepared.chunked:
            conn = ex.conn
            if conn is not None and ex is self.active:
                conn.send(CHUNK_END)
            else:
                ex.body_chunks.append(CHUNK_END)

    # -- bad and slow clients --------------------------------------------------
    def reject(self, status: int, reason: str) -> None:
        """Answer a bad request with a 4xx and close: nothing of it is forwarded."""
        self.to_dispatch = None
        ex = self.active
        if ex is not None and ex.conn is not None:
            self._drop_upstream(ex, reusable=False)
        if ex is not None and ex.response_started:
            self.close()
            return
        self.write(error_response(status, reason))
        self.close()

    def expire(self, now: float) -> None:
        if self.read_deadline and now > self.read_deadline:
            self.read_deadline = 0.0
            ex = self.active
            if ex is not None and ex.response_started:
                self.close()
            elif self.in_head and self.parsing is None and not self.header_bytes:
                self.close()  # idle keep-alive connection: nothing to say
            else:
                self.reject(408, "client too slow")
        if self.send_deadline and now > self.send_deadline:
            self.send_deadline = 0.0
            if self.transport is not None:
                self.transport.abort()
