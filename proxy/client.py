"""The client side's asyncio edge: one downstream connection, and the lean path.

A plain body-less request whole in one read (wire.lean_request) is taken
here with no parser callbacks, no per-header objects and, once warm, no new
exchange: `take_request` does what dispatching does when a pooled upstream
connection is at hand; its response comes back through `ResponseRelay.lean_response`
(response.py). Everything else goes to the connection's `RequestParser`
(request.py); the exchange state is the connection's `Relay` (relay.py).

The listener's `Edge` (edge.py) comes with the connection: the scheme goes into the
forwarding lines once per connection, the Strict-Transport-Security line of an ssl
listener to its ResponseRelay. `RedirectingConnection` is a plain listener's connection
under `redirect_to_https`.
"""

from __future__ import annotations

import asyncio
from time import perf_counter
from typing import cast

from proxy.balancer import route_of_request
from proxy.edge import PLAIN, Edge, redirect_answer
from proxy.records import Exchange, Shared
from proxy.relay import Relay
from proxy.request import RequestParser
from proxy.request_head import BODYLESS_REQUEST
from proxy.response import ResponseRelay
from proxy.settings import inside
from proxy.wire import (
    BODY_OR_UPGRADE,
    COOKIE_VALUES,
    LEAN_REQUEST_MAX,
    MAX_HEADER_BYTES,
    SIMPLE_REQUEST,
    WRITE_HIGH,
    LeanRequest,
    lean_request,
)


class ClientConnection(asyncio.Protocol):
    """One downstream connection: reads requests, hands them on, applies flow control."""

    # Made once the connection is (connection_made): nothing runs before that.
    relay: Relay
    request: RequestParser

    def __init__(self, shared: Shared, edge: Edge = PLAIN) -> None:
        self.shared = shared
        self.edge = edge
        # Every lean request head for the upstream goes on with these lines after its
        # X-Forwarded-Host, then its X-Request-ID line.
        self.forwarded_tail = b""

    # -- asyncio callbacks -----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        transport.set_write_buffer_limits(high=WRITE_HIGH)
        shared = self.shared
        relay = self.relay = Relay(shared, transport)
        relay.sink = ResponseRelay(relay, self.edge.hsts)
        peer = transport.get_extra_info("peername")
        ip = (peer[0] if peer else "unknown").encode()
        trusted = shared.settings.set_real_ip_from
        # Only a peer inside set_real_ip_from may name the client (nginx's real_ip module).
        real_ip_header = shared.real_ip_header if trusted and inside(ip.decode(), trusted) else None
        self.request = RequestParser(relay, ip, real_ip_header, self.edge.scheme)
        relay.client_ip = ip
        self.forwarded_tail = b"".join(
            (
                b"\r\nX-Forwarded-For: ",
                ip,
                b"\r\nX-Forwarded-Proto: ",
                self.edge.scheme,
                b"\r\nX-Real-IP: ",
                ip,
            )
        )
        shared.clients.add(self)
        shared.accepted += 1
        relay.read_deadline = shared.now + shared.settings.client_header_timeout

    def data_received(self, data: bytes) -> None:
        relay = self.relay
        tunnel = relay.tunnel_to
        if tunnel is not None:
            tunnel.read_deadline = self.shared.now + self.shared.read_timeout
            tunnel.send(data)
            return
        if relay.closing:
            return
        request = self.request
        if request.in_head and not request.header_bytes and relay.active is None:
            if len(data) <= LEAN_REQUEST_MAX:
                lean = lean_request(data)
                if lean is not None and self.take_request(relay, data, lean):
                    return
            # Fast path: one whole body-less request in one read, nothing after it.
            match = SIMPLE_REQUEST.fullmatch(data)
            if match is not None and BODY_OR_UPGRADE.search(data, match.start(3)) is None:
                request.take_simple(match.group(1), match.group(2), match.group(3))
                return
        request.feed(data)

    def take_request(self, relay: Relay, data: bytes, lean: LeanRequest) -> bool:
        """The common request, taken whole (see wire.lean_request). What Relay.dispatch
        and Relay.attach do, inline, when a pooled connection is at hand.

        False leaves the request to the other paths.
        """
        method, target, head_start = lean
        shared = self.shared
        if target.startswith(shared.status_prefix):
            return False
        ex = relay.spare
        if ex is None:
            ex = Exchange(method, target, True, True)
            ex.prepared = BODYLESS_REQUEST
            ex.request_complete = True
            head_only = ex.head_only
        else:
            # Only what a lean exchange changes needs resetting (see lean_response).
            relay.spare = None
            ex.method = method
            ex.target = target
            ex.head_only = head_only = method == b"HEAD"
            ex.route = None
            ex.sent = ex.response_started = False
            ex.started = perf_counter()
        ex.request_id_line = id_line = shared.request_ids.new()
        if shared.access_log is not None:
            ex.log_head = data
        ex.head = head = b"".join((head_start, self.forwarded_tail, id_line, b"\r\n\r\n"))
        ex.lean = not head_only
        route = None
        if shared.sticky and (shared.cookie_marker in data or b";" in target):
            cookies = [value.decode("latin-1") for value in COOKIE_VALUES.findall(data)]
            route = ex.route = route_of_request(
                target.decode("latin-1"), cookies, shared.cookie_name
            )
        relay.read_deadline = 0.0
        relay.active = ex
        if not shared.tries_limit:
            relay.fail(ex, 502, "no upstream left to try")
            return True
        name = shared.balancer.choose(route)
        if name is None:
            relay.fail(ex, 502, "no live upstreams")
            return True
        upstream = ex.upstream = shared.upstreams[name]
        upstream.stats.active += 1
        idle = upstream.idle
        if not idle or idle[-1].closed:
            relay.send_to(ex, upstream)
            return True
        conn = ex.conn = idle.pop()
        conn.reused = True
        conn.attach(relay.sink, relay, shared.now + shared.read_timeout)
        conn.send(head)
        ex.sent = True
        if relay.paused_for_upstream:
            relay.paused_for_upstream = False
            relay.update_reading()
        return True

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.shared.clients.discard(self)
        relay = self.relay
        relay.closing = True
        for ex in (relay.active, *relay.queue):
            if ex is not None and ex.conn is not None:
                relay.drop_upstream(ex, reusable=False)
        if relay.tunnel_to is not None:
            relay.tunnel_to.close()
        relay.active = None
        relay.queue.clear()

    def pause_writing(self) -> None:
        # A client that reads slowly answers for itself (send_timeout): the upstream we
        # stop reading from is not late meanwhile.
        relay = self.relay
        relay.writing_paused = True
        relay.send_deadline = self.shared.now + self.shared.settings.send_timeout
        ex = relay.active
        conn = ex.conn if ex is not None else relay.tunnel_to
        if conn is not None:
            conn.pause_reading()

    def resume_writing(self) -> None:
        relay = self.relay
        relay.writing_paused = False
        relay.send_deadline = 0.0
        ex = relay.active
        conn = ex.conn if ex is not None else relay.tunnel_to
        if conn is not None:
            conn.resume_reading(self.shared.now + self.shared.read_timeout)

    # -- used by the server (only for connections made) ------------------------
    @property
    def busy(self) -> bool:
        """An exchange is under way (a graceful shutdown waits for it)."""
        return self.relay.active is not None

    @property
    def closing(self) -> bool:
        return self.relay.closing

    def close(self) -> None:
        self.relay.close()

    def abort(self) -> None:
        self.relay.transport.abort()

    def expire(self, now: float) -> None:
        relay, request = self.relay, self.request
        if relay.read_deadline and now > relay.read_deadline:
            relay.read_deadline = 0.0
            ex = relay.active
            if ex is not None and ex.response_started:
                relay.close()
            elif request.in_head and request.parsing is None and not request.header_bytes:
                relay.close()  # idle keep-alive connection: nothing to say
            else:
                request.reject(408, "client too slow")
        if relay.send_deadline and now > relay.send_deadline:
            relay.send_deadline = 0.0
            relay.transport.abort()


class RedirectingConnection(ClientConnection):
    """A plain listener's connection under `redirect_to_https`: each request head is read
    whole first; the status pages and the health path go on as on any listener, anything
    else gets its 301 (edge.redirect_answer) and the connection closes."""

    def __init__(self, shared: Shared, edge: Edge) -> None:
        super().__init__(shared, edge)
        self.pending = b""
        self.exempt = (shared.status_prefix, shared.settings.health_path.encode())

    def data_received(self, data: bytes) -> None:
        relay, request = self.relay, self.request
        if not self.pending and (
            relay.active is not None
            or not request.in_head
            or request.header_bytes
            or relay.tunnel_to is not None
        ):
            super().data_received(data)  # within a request let through
            return
        if relay.closing:
            return
        pending = self.pending = self.pending + data
        end = pending.find(b"\r\n\r\n")
        if end < 0:
            if len(pending) > MAX_HEADER_BYTES:
                self.pending = b""
                request.reject(431, "request header too large")
            return
        self.pending = b""
        # Let through only a request alone in what was read: one pipelined behind it would
        # pass unseen.
        alone = end + 4 == len(pending)
        answer = redirect_answer(
            pending[: end + 4],
            port=self.edge.redirect_port,
            default_host=request.server_host().rpartition(b":")[0],
            exempt=self.exempt if alone else None,
        )
        if answer is None:
            super().data_received(pending)
            return
        relay.read_deadline = 0.0
        relay.write(answer)
        relay.close()
