"""Requests the lean path does not take: httptools' llhttp parser, or the fast path for
one whole body-less request in one read. Either way the request is checked
(request_head.py) before anything of it is forwarded, becomes an `Exchange`, and goes
to the connection's `Relay`; a bad one gets its 4xx and the connection closes.
"""

from __future__ import annotations

import logging

import httptools

from netnames import address_text
from proxy.access_log import ID_LINE
from proxy.answers import error_response
from proxy.balancer import route_of_request
from proxy.errors import BadRequestError
from proxy.records import Exchange
from proxy.relay import Relay
from proxy.request_head import prepare_request
from proxy.wire import CHUNK_END, HEADER_FIELD, MAX_HEADER_BYTES, MAX_TARGET, OTHER_PROTOCOL

logger = logging.getLogger("proxy")

# Request body bytes held while no upstream connection takes them.
_BODY_BUFFER_HIGH = 256 * 1024


class RequestParser:
    """The request side of one downstream connection, below its lean path."""

    def __init__(
        self,
        relay: Relay,
        client_ip: bytes,
        real_ip_header: bytes | None,
        scheme: bytes = b"http",
    ) -> None:
        self.relay = relay
        self.shared = relay.shared
        self.parser = httptools.HttpRequestParser(self)
        self.client_ip = client_ip
        # Set only for a peer that may name the client (nginx's set_real_ip_from).
        self.real_ip_header = real_ip_header
        # The connection's scheme (b"https" on an ssl listener), for X-Forwarded-Proto.
        self.scheme = scheme
        self.target_parts: list[bytes] = []
        self.target_size = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.header_bytes = 0
        self.in_head = True
        self.parsing: Exchange | None = None
        self.to_dispatch: Exchange | None = None

    def feed(self, data: bytes) -> None:
        """Parse one read; dispatch the request it completes, or answer what is wrong."""
        relay = self.relay
        if self.in_head:
            self.header_bytes += len(data)
            # llhttp also takes RTSP and ICE request lines; this proxy speaks HTTP only.
            if (b"TSP/" in data or b"ICE/" in data) and OTHER_PROTOCOL.search(data):
                self.reject(400, "not an HTTP request")
                return
        else:
            relay.read_deadline = self.shared.now + self.shared.settings.client_body_timeout
        try:
            self.parser.feed_data(data)
            self._dispatch_parsed()
        except httptools.HttpParserUpgrade as upgrade:
            # Bytes after an upgrade request belong to the tunnel, once the upstream agrees.
            rest = data[upgrade.args[0] :]
            self._dispatch_parsed()
            ex = relay.active
            if ex is not None and not ex.tunnel:
                relay.paused_for_upstream = True
                relay.update_reading()
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
            elif not relay.closing:
                if cause is not None:
                    logger.error("bug while handling a request", exc_info=cause)
                self.reject(400, str(error) or "malformed request")
            return
        # Headers still incomplete after this many bytes: nginx's 431/400 case.
        if self.in_head and self.header_bytes > MAX_HEADER_BYTES and not relay.closing:
            self.reject(431, "request header too large")

    def _dispatch_parsed(self) -> None:
        # Dispatched once the whole read is parsed, so that body bytes that came with
        # the head are checked (client_max_body_size) before anything is sent.
        ex = self.to_dispatch
        if ex is not None:
            self.to_dispatch = None
            if ex is self.relay.active and not self.relay.closing:
                self.relay.dispatch(ex)

    def take_simple(self, method: bytes, target: bytes, block: bytes) -> None:
        """A whole body-less HTTP/1.1 request (SIMPLE_REQUEST matched it): the same
        checks as the parser's, without its callbacks."""
        try:
            self._take_simple(method, target, block)
        except BadRequestError as error:
            self.reject(error.status, error.reason)

    def _take_simple(self, method: bytes, target: bytes, block: bytes) -> None:
        headers = HEADER_FIELD.findall(block)
        if len(block) > MAX_HEADER_BYTES:
            raise BadRequestError(431, "request header too large")
        if len(target) > MAX_TARGET:
            raise BadRequestError(414, "request line too long")
        relay, shared = self.relay, self.shared
        ex = Exchange(method, target, True, True)
        ex.request_complete = True
        if shared.access_log is not None:
            ex.log_head = b"%s %s HTTP/1.1\r\n%s" % (method, target, block)
        relay.read_deadline = 0.0
        relay.active = ex
        if target.startswith(shared.status_prefix):
            ex.local = True
            for name, value in headers:
                if name.lower() == b"connection" and b"close" in value.lower():
                    ex.keep_alive = False
            relay.answer_locally(ex)
            return
        self._prepare(ex, headers, "1.1", upgrade=False)
        ex.keep_alive = not ex.prepared.close_requested  # type: ignore[union-attr]
        ex.lean = ex.keep_alive and not ex.head_only
        relay.dispatch(ex)

    def _prepare(
        self, ex: Exchange, headers: list[tuple[bytes, bytes]], version: str, *, upgrade: bool
    ) -> None:
        shared = self.shared
        settings = shared.settings
        prepared = ex.prepared = prepare_request(
            ex.method,
            ex.target,
            headers,
            http_version=version,
            upgrade=upgrade,
            client_ip=self.client_ip,
            max_body_size=settings.client_max_body_size,
            default_host=self.server_host() if version == "1.0" else b"",
            real_ip_header=self.real_ip_header,
            scheme=self.scheme,
            request_id=shared.request_ids.new()[ID_LINE:],
        )
        ex.head = prepared.head
        ex.request_id_line = b"\r\nX-Request-ID: " + prepared.request_id
        if shared.sticky:
            ex.route = route_of_request(
                ex.target.decode("latin-1"), prepared.cookies, shared.cookie_name
            )

    def server_host(self) -> bytes:
        """host:port the client reached: the Host of an HTTP/1.0 request that has none."""
        local = self.relay.transport.get_extra_info("sockname")
        return address_text(local[0], local[1]).encode() if isinstance(local, tuple) else b""

    # -- httptools callbacks ---------------------------------------------------
    def on_message_begin(self) -> None:
        if self.relay.active is None:
            shared = self.shared
            self.relay.read_deadline = shared.now + shared.settings.client_header_timeout

    def on_url(self, url: bytes) -> None:
        self.target_size += len(url)
        if self.target_size > MAX_TARGET:
            raise BadRequestError(414, "request line too long")
        self.target_parts.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser, relay, shared = self.parser, self.relay, self.shared
        self.in_head = False
        if self.header_bytes > MAX_HEADER_BYTES:
            # Counted reads may include body bytes: measure the head exactly.
            size = sum(len(name) + len(value) + 4 for name, value in self.headers)
            if size > MAX_HEADER_BYTES:
                raise BadRequestError(431, "request header too large")
        self.header_bytes = 0
        relay.read_deadline = shared.now + shared.settings.client_body_timeout
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
        if shared.access_log is not None:
            ex.log_head = b"".join(
                [b"%s %s HTTP/%s" % (ex.method, target, version.encode())]
                + [b"\r\n%s: %s" % header for header in headers]
                + [b"\r\n"]
            )
        if target.startswith(shared.status_prefix):
            ex.local = True
        else:
            self._prepare(ex, headers, version, upgrade=parser.should_upgrade())
            prepared = ex.prepared
            assert prepared is not None
            ex.lean = ex.http11 and ex.keep_alive and not ex.head_only and not prepared.upgrade
            ex.expect_continue = prepared.expect_continue and ex.http11
        if relay.active is None:
            relay.active = ex
            if not ex.local:
                self.to_dispatch = ex
        else:
            relay.queue.append(ex)
            relay.paused_for_queue = True
            relay.update_reading()

    def on_body(self, body: bytes) -> None:
        ex = self.parsing
        if ex is None or ex.local:
            return
        ex.body_size += len(body)
        limit = self.shared.settings.client_max_body_size
        if limit and ex.body_size > limit:
            raise BadRequestError(413, "request body larger than client_max_body_size")
        assert ex.prepared is not None
        chunk = b"%x\r\n%b\r\n" % (len(body), body) if ex.prepared.chunked else body
        conn = ex.conn
        if conn is not None and ex is self.relay.active:
            conn.send(chunk)
        else:
            ex.body_chunks.append(chunk)
            ex.buffered += len(chunk)
            if ex.buffered > _BODY_BUFFER_HIGH:
                self.relay.paused_for_upstream = True
                self.relay.update_reading()

    def on_message_complete(self) -> None:
        ex = self.parsing
        self.parsing = None
        self.in_head = True
        if ex is None:
            return
        ex.request_complete = True
        relay = self.relay
        if ex is relay.active:
            relay.read_deadline = 0.0
            if ex.conn is not None and not relay.writing_paused:
                ex.conn.read_deadline = self.shared.now + self.shared.read_timeout
        if ex.local:
            if ex is relay.active:
                relay.answer_locally(ex)
            return
        assert ex.prepared is not None
        if ex.prepared.chunked:
            conn = ex.conn
            if conn is not None and ex is relay.active:
                conn.send(CHUNK_END)
            else:
                ex.body_chunks.append(CHUNK_END)

    # -- bad requests ----------------------------------------------------------
    def reject(self, status: int, reason: str) -> None:
        """Answer a bad request with a 4xx and close: nothing of it is forwarded."""
        self.to_dispatch = None
        relay = self.relay
        ex = relay.active
        if ex is not None and ex.conn is not None:
            relay.drop_upstream(ex, reusable=False)
        if ex is None or not ex.response_started:
            relay.write(error_response(status, reason))
        relay.close()
