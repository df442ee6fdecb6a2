"""The client side of forwarding: one downstream connection and its exchanges.

Requests are parsed by httptools' llhttp parser (or taken whole by the fast
path), checked, sent to an upstream chosen by the balancer, retried elsewhere
per nginx's proxy_next_upstream rules, and answered. Bodies stream both ways
with flow control; a request body already delivered is never sent again.

The lean path (`_lean_request`, `upstream_lean`) is the common exchange done
inline: a plain body-less request and a plain sized response, each whole in one
read, checked by one regular expression each (wire.py), with no parser
callbacks, no per-header objects, no coroutine and, once warm, no allocation of
an exchange. Anything it does not take, and every failure, goes the general way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, cast

import httptools

from proxy.balancer import route_of_request
from proxy.errors import BadRequestError
from proxy.message import (
    BODYLESS_REQUEST,
    PreparedRequest,
    error_response,
    prepare_request,
    prepare_response,
)
from proxy.wire import (
    BODY_OR_UPGRADE,
    COOKIE_VALUES,
    HEADER_FIELD,
    LEAN_REQUEST,
    LEAN_REQUEST_MAX,
    MAX_HEADER_BYTES,
    MAX_TARGET,
    SIMPLE_REQUEST,
    WRITE_HIGH,
)

if TYPE_CHECKING:
    import re

    from proxy.forward import Forwarder
    from proxy.server import Upstream
    from proxy.upstream import UpstreamConnection

logger = logging.getLogger("proxy")

_BODY_BUFFER_HIGH = 256 * 1024
_RETRY_STATUSES = frozenset({502, 503, 504})
_CHUNK_END = b"0\r\n\r\n"
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Exchange:
    """One client request on its way through the proxy."""

    __slots__ = (
        "body_chunks",
        "body_size",
        "buffered",
        "conn",
        "expect_continue",
        "framing",
        "head",
        "head_only",
        "http11",
        "keep_alive",
        "lean",
        "local",
        "method",
        "prepared",
        "request_complete",
        "response_started",
        "route",
        "sent",
        "stale_retry",
        "started",
        "target",
        "tried",
        "tunnel",
        "upstream",
    )

    def __init__(self, method: bytes, target: bytes, http11: bool, keep_alive: bool) -> None:
        self.method = method
        self.target = target
        self.http11 = http11
        self.keep_alive = keep_alive
        self.head_only = method == b"HEAD"
        self.prepared: PreparedRequest | None = None
        # What is sent upstream before any body.
        self.head = b""
        # A keep-alive HTTP/1.1 exchange whose response the lean path may take whole.
        self.lean = False
        self.local = False
        self.route: str | None = None
        self.body_chunks: list[bytes] = []
        self.body_size = 0
        self.buffered = 0
        self.request_complete = False
        self.upstream: Upstream | None = None
        self.conn: UpstreamConnection | None = None
        self.tried: list[str] = []
        self.sent = False
        self.stale_retry = False
        self.response_started = False
        self.framing = "none"
        self.tunnel = False
        self.expect_continue = False
        self.started = time.perf_counter()


class ClientConnection(asyncio.Protocol):
    """One downstream connection: parses requests, forwards them, writes responses."""

    def __init__(self, forwarder: Forwarder) -> None:
        self.forwarder = forwarder
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.client_ip = b""
        self.forwarded_tail = b""
        # The last finished lean exchange, for the next lean request to reuse.
        self.spare: Exchange | None = None
        self.target_parts: list[bytes] = []
        self.target_size = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.header_bytes = 0
        self.in_head = True
        self.parsing: Exchange | None = None
        self.active: Exchange | None = None
        self.queue: deque[Exchange] = deque()
        self.paused_for_upstream = False
        self.paused_for_queue = False
        self.reading_paused = False
        self.writing_paused = False
        self.closing = False
        self.tunnel_to: UpstreamConnection | None = None
        self.read_deadline = 0.0
        self.send_deadline = 0.0
        # While an upstream read is being parsed, writes to the client collect here.
        self.batch: list[bytes] | None = None
        self.to_dispatch: Exchange | None = None

    # -- asyncio callbacks -----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH)
        peer = transport.get_extra_info("peername")
        ip = self.client_ip = (peer[0] if peer else "unknown").encode()
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
                if match is not None and self._lean_request(data, match):
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
                self._update_reading()
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
        self.writing_paused = True
        self.send_deadline = self.forwarder.now + self.forwarder.settings.send_timeout
        ex = self.active
        conn = ex.conn if ex is not None else self.tunnel_to
        if conn is not None and conn.transport is not None and not conn.closed:
            conn.transport.pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        self.send_deadline = 0.0
        ex = self.active
        conn = ex.conn if ex is not None else self.tunnel_to
        if conn is not None and conn.transport is not None and not conn.closed:
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
            self._update_reading()

    def _lean_request(self, data: bytes, match: re.Match[bytes]) -> bool:
        """The common request, taken whole: `match` (LEAN_REQUEST) checked it and found
        Host; the head for the upstream is the request plus the X-Forwarded-* lines.
        What _dispatch and _attach do, inline, when a pooled connection is at hand.

        False leaves the request to the other paths.
        """
        method, target, host = match.groups()
        forwarder = self.forwarder
        if target.startswith(forwarder.status_prefix):
            return False
        ex = self.spare
        if ex is None:
            ex = Exchange(method, target, True, True)
            ex.prepared = BODYLESS_REQUEST
            ex.request_complete = True
        else:
            # Only what a lean exchange changes needs resetting (see upstream_lean).
            self.spare = None
            ex.method = method
            ex.target = target
            ex.head_only = method == b"HEAD"
            ex.route = None
            ex.sent = ex.response_started = False
            ex.started = time.perf_counter()
        head = ex.head = b"".join((data[:-2], b"X-Forwarded-Host: ", host, self.forwarded_tail))
        ex.lean = not ex.head_only
        route = None
        if forwarder.sticky and (forwarder.cookie_marker in data or b";" in target):
            cookies = [value.decode("latin-1") for value in COOKIE_VALUES.findall(data)]
            route = ex.route = route_of_request(
                target.decode("latin-1"), cookies, forwarder.cookie_name
            )
        self.read_deadline = 0.0
        self.active = ex
        if not forwarder.tries_limit:
            self._fail(ex, 502, "no upstream left to try")
            return True
        name = forwarder.balancer.choose(route)
        if name is None:
            self._fail(ex, 502, "no live upstreams")
            return True
        upstream = ex.upstream = forwarder.upstreams[name]
        upstream.stats.active += 1
        idle = upstream.idle
        if not idle or idle[-1].closed:
            self._connect(ex, upstream)
            return True
        # A pooled connection is between responses: nothing buffered, not close-delimited.
        conn = ex.conn = idle.pop()
        conn.reused = True
        conn.client = self
        conn.got_bytes = False
        conn.awaiting_head = True
        conn.idle_deadline = 0.0
        conn.read_deadline = forwarder.now + forwarder.read_timeout
        conn.transport.write(head)  # type: ignore[union-attr]
        ex.sent = True
        if self.paused_for_upstream:
            self.paused_for_upstream = False
            self._update_reading()
        return True

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
            # An upstream still taking the body is not late with its answer (nginx starts
            # proxy_read_timeout once the request is sent); one that stops reading pauses
            # us, and then this deadline expires.
            conn.read_deadline = self.forwarder.now + self.forwarder.read_timeout
        else:
            ex.body_chunks.append(chunk)
            ex.buffered += len(chunk)
            if ex.buffered > _BODY_BUFFER_HIGH:
                self.paused_for_upstream = True
                self._update_reading()

    def on_message_complete(self) -> None:
        ex = self.parsing
        self.parsing = None
        self.in_head = True
        if ex is None:
            return
        ex.request_complete = True
        if ex is self.active:
            self.read_deadline = 0.0
        if ex.local:
            if ex is self.active:
                self._answer_locally(ex)
            return
        assert ex.prepared is not None
        if ex.prepared.chunked:
            conn = ex.conn
            if conn is not None and ex is self.active:
                conn.send(_CHUNK_END)
            else:
                ex.body_chunks.append(_CHUNK_END)

    # -- dispatching -----------------------------------------------------------
    def _dispatch(self, ex: Exchange) -> None:
        forwarder = self.forwarder
        if len(ex.tried) >= forwarder.tries_limit:
            self._fail(ex, 502, "no upstream left to try")
            return
        name = forwarder.balancer.choose(ex.route, ex.tried)
        if name is None:
            self._fail(ex, 502, "no live upstreams" if not ex.tried else "no upstream left to try")
            return
        upstream = forwarder.upstreams[name]
        ex.upstream = upstream
        upstream.stats.active += 1
        self._connect(ex, upstream)

    def _connect(self, ex: Exchange, upstream: Upstream) -> None:
        """Send `ex` on a pooled connection to `upstream`, or on a new one."""
        idle = upstream.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                conn.reused = True
                self._attach(ex, conn)
                return
        self.forwarder.connect(self, ex, upstream)

    def _attach(self, ex: Exchange, conn: UpstreamConnection) -> None:
        if self.closing or ex is not self.active:
            if ex.upstream is not None:
                ex.upstream.stats.active -= 1
            self.forwarder.release(conn, reusable=True)
            return
        ex.conn = conn
        conn.client = self
        conn.got_bytes = False
        conn.until_close = False
        conn.awaiting_head = True
        conn.buffered = b""
        conn.head_start = 0
        conn.idle_deadline = 0.0
        assert ex.prepared is not None and conn.transport is not None
        if not ex.prepared.upgrade:
            self.paused_for_upstream = False  # a full upstream buffer pauses us again
        chunks = ex.body_chunks
        if ex.prepared.upgrade:
            conn.transport.write(ex.head)
        elif chunks:
            ex.body_chunks = []
            ex.buffered = 0
            conn.transport.writelines([ex.head, *chunks])
        else:
            conn.transport.write(ex.head)
        ex.sent = True
        conn.read_deadline = self.forwarder.now + self.forwarder.read_timeout
        if ex.expect_continue:
            ex.expect_continue = False
            self._write(_CONTINUE)
        self._update_reading()

    def connect_failed(self, ex: Exchange, upstream: Upstream, kind: str, cause: str) -> None:
        """Called by the forwarder when a new upstream connection could not be made."""
        if self.closing or ex is not self.active:
            upstream.stats.active -= 1
            return
        self._failed(ex, upstream, kind, cause)

    def connected(self, ex: Exchange, conn: UpstreamConnection) -> None:
        self._attach(ex, conn)

    # -- upstream events -------------------------------------------------------
    def upstream_head(self, conn: UpstreamConnection, status: int, head: bytes) -> None:
        """Start the response, or go to the next upstream after a 502/503/504."""
        ex = self.active
        if ex is None or ex.conn is not conn:
            return
        if 100 <= status < 200 and status != 101:
            return  # interim responses are the proxy's business, not the client's
        assert ex.prepared is not None
        if (
            status in _RETRY_STATUSES
            and ex.prepared.idempotent
            and not ex.prepared.has_body
            and len(ex.tried) + 1 < self.forwarder.tries_limit
        ):
            conn.awaiting_head = False
            self._failed(ex, ex.upstream, "status", f"upstream answered {status}")
            return
        tunnel = status == 101 and ex.prepared.upgrade
        plan = prepare_response(
            head,
            status,
            head_only=ex.head_only,
            client_http11=ex.http11,
            client_keep_alive=ex.keep_alive and not self.closing and not ex.prepared.upgrade,
            tunnel=tunnel,
        )
        client_head, framing, keep_alive, until_close, _, upstream_keep_alive = plan
        conn.awaiting_head = False
        conn.upstream_keep_alive = upstream_keep_alive
        ex.framing = framing
        ex.keep_alive = keep_alive
        ex.response_started = True
        conn.until_close = until_close
        self._write(client_head)
        if tunnel:
            ex.tunnel = True
            self.tunnel_to = conn
            conn.tunnel_to = self.transport
            conn.read_deadline = 0.0
            self.read_deadline = 0.0
            if ex.body_chunks:
                conn.transport.writelines(ex.body_chunks)  # type: ignore[union-attr]
                ex.body_chunks = []
            self.paused_for_queue = False
            self.paused_for_upstream = False
            self._update_reading()
            return
        if ex.head_only:
            # The parser cannot know a HEAD response has no body: finish here and
            # retire the connection rather than confuse its parser.
            conn.until_close = False
            self.upstream_complete(conn, reusable=False)

    def upstream_body(self, body: bytes) -> None:
        ex = self.active
        transport = self.transport
        if ex is None or transport is None or not ex.response_started:
            return
        batch = self.batch
        if ex.framing == "chunked":
            if batch is None:
                transport.writelines((b"%x\r\n" % len(body), body, b"\r\n"))
            else:
                batch += (b"%x\r\n" % len(body), body, b"\r\n")
        elif batch is None:
            transport.write(body)
        else:
            batch.append(body)

    def flush(self) -> None:
        """Write what one upstream read produced (head, body, end) in one go."""
        batch = self.batch
        self.batch = None
        if batch:
            transport = self.transport
            if transport is not None and not transport.is_closing():
                if len(batch) == 1:
                    transport.write(batch[0])
                elif len(batch) == 2 and len(batch[1]) < 16384:
                    transport.write(batch[0] + batch[1])  # cheaper than a writev of two
                else:
                    transport.writelines(batch)

    def upstream_lean(self, conn: UpstreamConnection, data: bytes, match: re.Match[bytes]) -> bool:
        """The lean path of a response: `data` is a whole response whose head matched
        LEAN_RESPONSE; it goes to the client as it is, less its Connection line.
        What _drop_upstream and _finish do, inline, for a client with nothing queued.

        False leaves the response to the other paths.
        """
        ex = self.active
        transport = self.transport
        if (
            ex is None
            or ex.conn is not conn
            or not ex.lean
            or self.closing
            or transport is None
            or transport.is_closing()
        ):
            return False
        _, length, line, keep, line_b, keep_b, length_b = match.groups()
        if length is None:
            length, line, keep, group = length_b, line_b, keep_b, 5
        else:
            group = 3
        if len(data) - match.end() != int(length):
            return False
        conn.awaiting_head = False
        ex.response_started = True
        if line is None:
            transport.write(data)
        else:
            start, stop = match.span(group)
            transport.write(data[:start] + data[stop:])
        upstream = ex.upstream
        assert upstream is not None
        stats = upstream.stats
        stats.observe(time.perf_counter() - ex.started)
        health = upstream.health
        if health.failing:
            health.record_success(self.forwarder.clock())
        ex.conn = None
        stats.active -= 1
        conn.client = None
        conn.read_deadline = 0.0
        forwarder = self.forwarder
        idle = upstream.idle
        if (
            (line is None or keep is not None)
            and ex.request_complete
            and not conn.closed
            and len(idle) < forwarder.keepalive
        ):
            conn.idle_deadline = forwarder.now + forwarder.keepalive_timeout
            idle.append(conn)  # Forwarder.release, inline
        else:
            conn.close()
        if (
            self.queue
            or self.reading_paused
            or self.paused_for_upstream
            or self.paused_for_queue
            or not ex.request_complete
            or not ex.keep_alive
        ):
            self._finish(ex)
        else:
            self.active = None
            self.read_deadline = forwarder.now + forwarder.keepalive_timeout
            if (
                ex.prepared is BODYLESS_REQUEST
                and not ex.tried
                and not ex.stale_retry
                and not ex.body_chunks
            ):
                # Nothing refers to it any more: the next lean request may reuse it.
                self.spare = ex
        return True

    def upstream_whole(
        self, conn: UpstreamConnection, status: int, head: bytes, body: bytes
    ) -> bool:
        """The fast path: a whole sized response from one read, written in one go.

        False leaves the response to the parser path (retries, HEAD, upgrades, or a
        body that is not exactly Content-Length bytes).
        """
        ex = self.active
        if ex is None or ex.conn is not conn or status in _RETRY_STATUSES or ex.head_only:
            return False
        prepared = ex.prepared
        if prepared is None or prepared.upgrade:
            return False
        client_head, framing, keep_alive, _, length, upstream_keep_alive = prepare_response(
            head,
            status,
            head_only=False,
            client_http11=ex.http11,
            client_keep_alive=ex.keep_alive and not self.closing,
        )
        if framing != "length" or length != len(body):
            return False
        conn.awaiting_head = False
        ex.keep_alive = keep_alive
        ex.response_started = True
        transport = self.transport
        if transport is not None and not self.closing:
            transport.write(client_head + body if len(body) < 16384 else client_head)
            if len(body) >= 16384:
                transport.write(body)
        upstream = ex.upstream
        assert upstream is not None
        upstream.stats.observe(time.perf_counter() - ex.started)
        health = upstream.health
        if health.failing:
            health.record_success(self.forwarder.clock())
        self._drop_upstream(ex, reusable=ex.request_complete and upstream_keep_alive)
        self._finish(ex)
        return True

    def upstream_complete(self, conn: UpstreamConnection, reusable: bool = True) -> None:
        ex = self.active
        if ex is None or ex.conn is not conn:
            return
        if not ex.response_started:
            self.upstream_failed(conn, "error", "upstream closed before answering")
            return
        if ex.framing == "chunked":
            self._write(_CHUNK_END)
        upstream = ex.upstream
        assert upstream is not None
        upstream.stats.observe(time.perf_counter() - ex.started)
        health = upstream.health
        if health.failing:
            health.record_success(self.forwarder.clock())
        reusable = (
            reusable and ex.request_complete and not conn.until_close and conn.upstream_keep_alive
        )
        self._drop_upstream(ex, reusable=reusable)
        self._finish(ex)

    def upstream_failed(self, conn: UpstreamConnection, kind: str, cause: str) -> None:
        ex = self.active
        if ex is None or ex.conn is not conn:
            conn.close()
            return
        if ex.response_started:
            # Too late for a clean error: the client sees the connection cut.
            upstream = ex.upstream
            assert upstream is not None
            upstream.stats.failures += 1
            upstream.health.record_failure(self.forwarder.clock(), cause)
            self._drop_upstream(ex, reusable=False)
            self.close()
            return
        stale = conn.reused and not conn.got_bytes and kind == "error" and not ex.stale_retry
        if stale and ex.prepared is not None and ex.prepared.idempotent:
            # A pooled connection the upstream had already closed: try a fresh one,
            # as nginx does for cached connections, without counting a try.
            ex.stale_retry = True
            upstream = ex.upstream
            assert upstream is not None
            self._drop_upstream(ex, reusable=False)
            upstream.stats.active += 1
            ex.upstream = upstream
            self.forwarder.connect(self, ex, upstream)
            return
        self._failed(ex, ex.upstream, kind, cause)

    # -- failure and retry (nginx proxy_next_upstream) ---------------------------
    def _failed(self, ex: Exchange, upstream: Upstream | None, kind: str, cause: str) -> None:
        forwarder = self.forwarder
        assert upstream is not None and ex.prepared is not None
        if ex.conn is not None:
            self._drop_upstream(ex, reusable=False)
        else:
            upstream.stats.active -= 1
        upstream.stats.failures += 1
        upstream.health.record_failure(forwarder.clock(), cause)
        forwarder.note_failure(upstream, cause)
        ex.tried.append(upstream.spec.name)
        body_delivered = ex.sent and ex.prepared.has_body
        may_retry = kind == "refused" or (ex.prepared.idempotent and not body_delivered)
        if may_retry and len(ex.tried) < forwarder.tries_limit:
            upstream.stats.retries += 1
            forwarder.retries += 1
            ex.sent = False
            self._dispatch(ex)
            return
        status = 504 if kind == "timeout" else 502
        self._fail(ex, status, f"{upstream.spec.name}: {cause}")

    def _fail(self, ex: Exchange, status: int, detail: str) -> None:
        ex.keep_alive = False
        self._write(error_response(status, detail))
        self.close()

    def _drop_upstream(self, ex: Exchange, *, reusable: bool) -> None:
        conn = ex.conn
        ex.conn = None
        upstream = ex.upstream
        if upstream is not None:
            upstream.stats.active -= 1
        if conn is not None:
            conn.client = None
            conn.read_deadline = 0.0
            self.forwarder.release(conn, reusable=reusable)

    def _finish(self, ex: Exchange) -> None:
        self.active = None
        if not ex.keep_alive or not ex.request_complete:
            self.close()
            return
        if self.queue:
            nxt = self.queue.popleft()
            self.active = nxt
            if not self.queue:
                self.paused_for_queue = False
                self._update_reading()
            if nxt.local:
                if nxt.request_complete:
                    self._answer_locally(nxt)
            else:
                self._dispatch(nxt)
            return
        self.paused_for_queue = False
        self.paused_for_upstream = False
        self._update_reading()
        self.read_deadline = self.forwarder.now + self.forwarder.keepalive_timeout

    def _answer_locally(self, ex: Exchange) -> None:
        response, keep_alive = self.forwarder.local_response(ex.method, ex.target, ex.keep_alive)
        self._write(response)
        ex.keep_alive = keep_alive
        ex.response_started = True
        self._finish(ex)

    # -- client side helpers ---------------------------------------------------
    def _write(self, data: bytes) -> None:
        batch = self.batch
        if batch is not None:
            batch.append(data)
            return
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def pause_reading_for_upstream(self, paused: bool) -> None:
        self.paused_for_upstream = paused
        self._update_reading()

    def _update_reading(self) -> None:
        want_paused = self.paused_for_upstream or self.paused_for_queue
        if want_paused == self.reading_paused:
            return
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self.reading_paused = want_paused
        if want_paused:
            transport.pause_reading()
        else:
            transport.resume_reading()

    def reject(self, status: int, reason: str) -> None:
        """Answer a bad request with a 4xx and close: nothing of it is forwarded."""
        self.to_dispatch = None
        ex = self.active
        if ex is not None and ex.conn is not None:
            self._drop_upstream(ex, reusable=False)
        if ex is not None and ex.response_started:
            self.close()
            return
        self._write(error_response(status, reason))
        self.close()

    def close(self) -> None:
        if self.closing:
            return
        self.flush()
        self.closing = True
        self.read_deadline = 0.0
        transport = self.transport
        if transport is not None:
            transport.close()  # flushes what was written, then closes

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
