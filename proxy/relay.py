"""The life of an exchange once its request is parsed, on the client's connection.

`Relay` sends the request to an upstream chosen by the balancer, retries it
elsewhere per nginx's proxy_next_upstream rules, relays the response (head, body
chunks, end) to the client with flow control, and finishes or fails the exchange.
A request body already delivered is never sent again. `ClientConnection`
(client.py) adds the request parsing on top; the lean path (lean.py) does the
common exchange inline.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING

from proxy.message import error_response, prepare_response
from proxy.wire import CHUNK_END, CONTINUE

if TYPE_CHECKING:
    from proxy.exchange import Exchange
    from proxy.forward import Forwarder
    from proxy.server import Upstream
    from proxy.upstream import UpstreamConnection

RETRY_STATUSES = frozenset({502, 503, 504})


class Relay(asyncio.Protocol):
    """The exchange side of one downstream connection (base of ClientConnection)."""

    def __init__(self, forwarder: Forwarder) -> None:
        self.forwarder = forwarder
        self.transport: asyncio.Transport | None = None
        # The last finished lean exchange, for the next lean request to reuse.
        self.spare: Exchange | None = None
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

    # -- dispatching -----------------------------------------------------------
    def _dispatch(self, ex: Exchange) -> None:
        forwarder = self.forwarder
        if len(ex.tried) >= forwarder.tries_limit:
            self.fail(ex, 502, "no upstream left to try")
            return
        name = forwarder.balancer.choose(ex.route, ex.tried)
        if name is None:
            self.fail(ex, 502, "no live upstreams" if not ex.tried else "no upstream left to try")
            return
        upstream = forwarder.upstreams[name]
        ex.upstream = upstream
        upstream.stats.active += 1
        self.send_to(ex, upstream)

    def send_to(self, ex: Exchange, upstream: Upstream) -> None:
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
        # proxy_read_timeout runs once the whole request is sent, as in nginx: while the
        # client is still sending, a stall is the client's (client_body_timeout).
        if ex.request_complete:
            conn.read_deadline = self.forwarder.now + self.forwarder.read_timeout
        if ex.expect_continue:
            ex.expect_continue = False
            self.write(CONTINUE)
        self.update_reading()

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
            status in RETRY_STATUSES
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
        self.write(client_head)
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
            self.update_reading()
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

    def upstream_whole(
        self, conn: UpstreamConnection, status: int, head: bytes, body: bytes
    ) -> bool:
        """The fast path: a whole sized response from one read, written in one go.

        False leaves the response to the parser path (retries, HEAD, upgrades, or a
        body that is not exactly Content-Length bytes).
        """
        ex = self.active
        if ex is None or ex.conn is not conn or status in RETRY_STATUSES or ex.head_only:
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
        self._note_answer(ex)
        self._drop_upstream(ex, reusable=ex.request_complete and upstream_keep_alive)
        self.finish(ex)
        return True

    def _note_answer(self, ex: Exchange) -> None:
        """An upstream answered in full: its latency, and a success for its health."""
        upstream = ex.upstream
        assert upstream is not None
        upstream.stats.observe(time.perf_counter() - ex.started)
        health = upstream.health
        if health.failing:
            health.record_success(self.forwarder.clock())

    def upstream_complete(self, conn: UpstreamConnection, reusable: bool = True) -> None:
        ex = self.active
        if ex is None or ex.conn is not conn:
            return
        if not ex.response_started:
            self.upstream_failed(conn, "error", "upstream closed before answering")
            return
        if ex.framing == "chunked":
            self.write(CHUNK_END)
        self._note_answer(ex)
        reusable = (
            reusable and ex.request_complete and not conn.until_close and conn.upstream_keep_alive
        )
        self._drop_upstream(ex, reusable=reusable)
        self.finish(ex)

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
        self.fail(ex, status, f"{upstream.spec.name}: {cause}")

    def fail(self, ex: Exchange, status: int, detail: str) -> None:
        ex.keep_alive = False
        self.write(error_response(status, detail))
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

    def finish(self, ex: Exchange) -> None:
        self.active = None
        if not ex.keep_alive or not ex.request_complete:
            self.close()
            return
        if self.queue:
            nxt = self.queue.popleft()
            self.active = nxt
            if not self.queue:
                self.paused_for_queue = False
                self.update_reading()
            if nxt.local:
                if nxt.request_complete:
                    self._answer_locally(nxt)
            else:
                self._dispatch(nxt)
            return
        self.paused_for_queue = False
        self.paused_for_upstream = False
        self.update_reading()
        self.read_deadline = self.forwarder.now + self.forwarder.keepalive_timeout

    def _answer_locally(self, ex: Exchange) -> None:
        response, keep_alive = self.forwarder.local_response(ex.method, ex.target, ex.keep_alive)
        self.write(response)
        ex.keep_alive = keep_alive
        ex.response_started = True
        self.finish(ex)

    # -- client side helpers ---------------------------------------------------
    def write(self, data: bytes) -> None:
        batch = self.batch
        if batch is not None:
            batch.append(data)
            return
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def pause_reading_for_upstream(self, paused: bool) -> None:
        """The upstream stopped (or resumed) taking the request: while we do not read the
        client, its client_body_timeout does not run; the upstream's deadline does."""
        self.paused_for_upstream = paused
        ex = self.active
        if paused:
            self.read_deadline = 0.0
        elif ex is not None and not ex.request_complete:
            forwarder = self.forwarder
            self.read_deadline = forwarder.now + forwarder.settings.client_body_timeout
        self.update_reading()

    def request_complete(self) -> bool:
        ex = self.active
        return ex is not None and ex.request_complete

    def update_reading(self) -> None:
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

    def close(self) -> None:
        if self.closing:
            return
        self.flush()
        self.closing = True
        self.read_deadline = 0.0
        transport = self.transport
        if transport is not None:
            transport.close()  # flushes what was written, then closes
