"""One client connection's exchanges, once parsed: where each request goes.

`Relay` holds the connection's exchange state (the active exchange, the queue
of pipelined ones, flow control, deadlines), sends each request to an upstream
the balancer chooses, tries the next one per nginx's proxy_next_upstream rules
(a request body already delivered is never sent again), and finishes the
exchange. The responses come back through the connection's `ResponseRelay`
(response.py), which the upstream connection reports to.
"""

from __future__ import annotations

import asyncio
from collections import deque
from time import perf_counter

from proxy.access_log import ID_LINE
from proxy.answers import error_response
from proxy.records import Exchange, ResponseSink, Shared, Upstream, UpstreamLink
from proxy.wire import CONTINUE


class Relay:
    """The exchange side of one downstream connection."""

    sink: ResponseSink  # the connection's ResponseRelay, set once built around this

    def __init__(self, shared: Shared, transport: asyncio.Transport) -> None:
        self.shared = shared
        self.transport = transport
        self.client_ip = b""  # the peer's address, for the access log
        # The last finished lean exchange, for the next lean request to reuse.
        self.spare: Exchange | None = None
        self.active: Exchange | None = None
        self.queue: deque[Exchange] = deque()
        self.paused_for_upstream = False
        self.paused_for_queue = False
        self.reading_paused = False
        self.writing_paused = False
        self.closing = False
        self.tunnel_to: UpstreamLink | None = None
        # The client's read deadline (header, body or keep-alive timeout; 0: none) and
        # send_timeout's while its writes are paused.
        self.read_deadline = 0.0
        self.send_deadline = 0.0
        # While an upstream read is being parsed, writes to the client collect here.
        self.batch: list[bytes] | None = None

    # -- sending the request ---------------------------------------------------
    def dispatch(self, ex: Exchange) -> None:
        shared = self.shared
        if len(ex.tried) >= shared.tries_limit:
            self.fail(ex, 502, "no upstream left to try")
            return
        name = shared.balancer.choose(ex.route, ex.tried)
        if name is None:
            self.fail(ex, 502, "no live upstreams" if not ex.tried else "no upstream left to try")
            return
        upstream = shared.upstreams[name]
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
                self.attach(ex, conn)
                return
        self.shared.pool.connect(upstream, ex, self.attach, self.connect_failed)

    def attach(self, ex: Exchange, conn: UpstreamLink) -> None:
        """Send `ex` (head, body so far) on `conn`, which reports back to the sink."""
        if self.closing or ex is not self.active:
            if ex.upstream is not None:
                ex.upstream.stats.active -= 1
            self.shared.pool.release(conn, reusable=True)
            return
        ex.conn = conn
        shared = self.shared
        # proxy_read_timeout runs once the whole request is sent, as in nginx: while the
        # client is still sending, a stall is the client's (client_body_timeout).
        conn.attach(
            self.sink, self, shared.now + shared.read_timeout if ex.request_complete else 0.0
        )
        prepared = ex.prepared
        assert prepared is not None
        chunks = ex.body_chunks
        if prepared.upgrade:
            conn.send(ex.head)
        else:
            self.paused_for_upstream = False  # a full upstream buffer pauses us again
            if chunks:
                ex.body_chunks = []
                ex.buffered = 0
                conn.send_lines([ex.head, *chunks])
            else:
                conn.send(ex.head)
        ex.sent = True
        if ex.expect_continue:
            ex.expect_continue = False
            self.write(CONTINUE)
        self.update_reading()

    def connect_failed(self, ex: Exchange, upstream: Upstream, kind: str, cause: str) -> None:
        """A new upstream connection could not be made."""
        if self.closing or ex is not self.active:
            upstream.stats.active -= 1
            return
        self.failed(ex, upstream, kind, cause)

    # -- failure and retry (nginx proxy_next_upstream) ---------------------------
    def failed(self, ex: Exchange, upstream: Upstream | None, kind: str, cause: str) -> None:
        shared = self.shared
        assert upstream is not None and ex.prepared is not None
        if ex.conn is not None:
            self.drop_upstream(ex, reusable=False)
        else:
            upstream.stats.active -= 1
        upstream.stats.failures += 1
        upstream.health.record_failure(shared.clock(), cause)
        ex.tried.append(upstream.spec.name)
        body_delivered = ex.sent and ex.prepared.has_body
        may_retry = kind == "refused" or (ex.prepared.idempotent and not body_delivered)
        if may_retry and len(ex.tried) < shared.tries_limit:
            upstream.stats.retries += 1
            shared.retries += 1
            ex.sent = False
            self.dispatch(ex)
            return
        self.fail(ex, 504 if kind == "timeout" else 502, f"{upstream.spec.name}: {cause}")

    def fail(self, ex: Exchange, status: int, detail: str) -> None:
        ex.keep_alive = False
        lines = self.sink.answer_lines(ex)
        answer = error_response(status, detail, lines=lines)
        self.log_answer(ex, status, len(answer) - answer.index(b"\r\n\r\n") - 4)
        self.write(answer)
        self.close()

    def drop_upstream(self, ex: Exchange, *, reusable: bool) -> None:
        conn = ex.conn
        ex.conn = None
        upstream = ex.upstream
        if upstream is not None:
            upstream.stats.active -= 1
        if conn is not None:
            conn.detach()
            self.shared.pool.release(conn, reusable=reusable)

    # -- finishing ---------------------------------------------------------------
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
                    self.answer_locally(nxt)
            else:
                self.dispatch(nxt)
            return
        self.paused_for_queue = False
        self.paused_for_upstream = False
        self.update_reading()
        self.read_deadline = self.shared.now + self.shared.keepalive_timeout

    def answer_locally(self, ex: Exchange) -> None:
        """A request under the status prefix: the proxy answers it itself."""
        shared = self.shared
        subscribe = shared.subscribe_status
        if (
            subscribe is not None
            and ex.method in (b"GET", b"HEAD")
            and ex.target.split(b"?", 1)[0] == shared.status_events_path
        ):
            # The live updates: the connection is the stream's from here on.
            self.active = None
            self.closing = True
            self.read_deadline = 0.0
            subscribe(self.transport, ex.head_only)
            return
        response, keep_alive = shared.local_response(ex.method, ex.target, ex.keep_alive)
        self.write(response)
        ex.keep_alive = keep_alive
        ex.response_started = True
        self.finish(ex)

    def log_answer(self, ex: Exchange, status: int, body_bytes: int) -> None:
        """One answered request in the access log, when there is one."""
        log = self.shared.access_log
        if log is not None:
            log.request(
                client=self.client_ip,
                head=ex.log_head,
                status=status,
                body_bytes=body_bytes,
                request_id=ex.request_id_line[ID_LINE:],
                upstream_seconds=perf_counter() - ex.started if ex.upstream else None,
            )

    # -- the client's transport ------------------------------------------------
    def write(self, data: bytes) -> None:
        batch = self.batch
        if batch is not None:
            batch.append(data)
            return
        transport = self.transport
        if not transport.is_closing():
            transport.write(data)

    def begin_read(self) -> None:
        self.batch = []

    def request_complete(self) -> bool:
        ex = self.active
        return ex is not None and ex.request_complete

    def flush(self) -> None:
        """Write what one upstream read produced (head, body, end) in one go."""
        batch = self.batch
        self.batch = None
        if batch:
            transport = self.transport
            if not transport.is_closing():
                if len(batch) == 1:
                    transport.write(batch[0])
                elif len(batch) == 2 and len(batch[1]) < 16384:
                    transport.write(batch[0] + batch[1])  # cheaper than a writev of two
                else:
                    transport.writelines(batch)

    def upstream_paused(self, paused: bool) -> None:
        """The upstream stopped (or resumed) taking the request: while we do not read the
        client, its client_body_timeout does not run; the upstream's deadline does."""
        self.paused_for_upstream = paused
        ex = self.active
        if paused:
            self.read_deadline = 0.0
        elif ex is not None and not ex.request_complete:
            self.read_deadline = self.shared.now + self.shared.settings.client_body_timeout
        self.update_reading()

    def update_reading(self) -> None:
        want_paused = self.paused_for_upstream or self.paused_for_queue
        if want_paused == self.reading_paused:
            return
        transport = self.transport
        if transport.is_closing():
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
        self.transport.close()  # flushes what was written, then closes
