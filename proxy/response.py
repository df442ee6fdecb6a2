"""Responses on their way back: what an upstream connection reports, written to the client.

`ResponseRelay` is the `ResponseSink` (records.py) of one client connection. It
takes a whole response in one go when it can (the lean path: a plain head, the
exact body, written as it came less its Connection line; or a whole sized
response rewritten), otherwise the head, then body chunks, then the end, with
the framing the client needs. A 502/503/504 to a retryable request sends the
request on to the next upstream (relay.py) instead. On an ssl listener with
`hsts_max_age` every head gets the Strict-Transport-Security line (`hsts`).
"""

from __future__ import annotations

from time import perf_counter

from proxy.records import Exchange, UpstreamLink
from proxy.relay import Relay
from proxy.request_head import BODYLESS_REQUEST
from proxy.response_head import prepare_response
from proxy.wire import CHUNK_END, LeanHead

RETRY_STATUSES = frozenset({502, 503, 504})


class ResponseRelay:
    """The client side of a connection's exchanges, as its upstream connections see it."""

    __slots__ = ("hsts", "relay")

    def __init__(self, relay: Relay, hsts: bytes = b"") -> None:
        self.relay = relay
        # b"\r\nStrict-Transport-Security: max-age=N" (edge.py), or b"" for none.
        self.hsts = hsts

    # -- whole responses -------------------------------------------------------
    def lean_response(self, conn: UpstreamLink, data: bytes, head: LeanHead) -> bool:
        """`data` is a whole response whose head `head` describes: it goes to the client
        as it is, less its Connection line. What note_answer, Relay.drop_upstream and
        Relay.finish do, inline, for a client with nothing queued.

        False leaves the response to the other paths.
        """
        relay = self.relay
        ex = relay.active
        transport = relay.transport
        if ex is None or ex.conn is not conn or not ex.lean or relay.closing:
            return False
        head_end, length, cut_start, cut_stop, upstream_keep_alive = head
        if len(data) - head_end != length or transport.is_closing():
            return False
        ex.response_started = True
        # X-Request-ID and HSTS in place of the Connection line, else before the blank line.
        at = cut_start if cut_stop else head_end - 4
        hsts = self.hsts
        if hsts:
            transport.write(b"".join((data[:at], ex.request_id_line, hsts, data[cut_stop or at :])))
        else:
            transport.write(b"".join((data[:at], ex.request_id_line, data[cut_stop or at :])))
        upstream = ex.upstream
        assert upstream is not None
        stats = upstream.stats
        stats.responses[data[9] - 48] += 1  # the status class: LEAN_RESPONSE took 2xx-4xx
        if relay.shared.access_log is not None:
            relay.log_answer(ex, int(data[9:12]), length)
        stats.observe(perf_counter() - ex.started)
        shared = relay.shared
        health = upstream.health
        if health.failing:
            health.record_success(shared.clock())
        ex.conn = None
        stats.active -= 1
        request_complete = ex.request_complete
        # The pool's release, inline.
        conn.detach()
        idle = upstream.idle
        if upstream_keep_alive and request_complete and len(idle) < shared.keepalive:
            conn.idle_deadline = shared.now + shared.keepalive_timeout
            idle.append(conn)
        else:
            conn.close()
        if (
            relay.queue
            or relay.reading_paused
            or relay.paused_for_upstream
            or relay.paused_for_queue
            or not request_complete
            or not ex.keep_alive
        ):
            relay.finish(ex)
            return True
        relay.active = None
        relay.read_deadline = shared.now + shared.keepalive_timeout
        if (
            ex.prepared is BODYLESS_REQUEST
            and not ex.tried
            and not ex.stale_retry
            and not ex.body_chunks
        ):
            # Nothing refers to it any more: the next lean request may reuse it.
            relay.spare = ex
        return True

    def whole_response(self, conn: UpstreamLink, status: int, head: bytes, body: bytes) -> bool:
        """A whole sized response from one read, rewritten and written in one go.

        False leaves the response to the parser path (retries, HEAD, upgrades, or a
        body that is not exactly Content-Length bytes).
        """
        relay = self.relay
        ex = relay.active
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
            client_keep_alive=ex.keep_alive and not relay.closing,
        )
        if framing != "length" or length != len(body):
            return False
        client_head = client_head[:-4] + self.answer_lines(ex) + b"\r\n\r\n"
        self.count(ex, status)
        ex.keep_alive = keep_alive
        ex.response_started = True
        transport = relay.transport
        if not relay.closing:
            if len(body) < 16384:
                transport.write(client_head + body)
            else:
                transport.writelines((client_head, body))
        self.note_answer(ex)
        relay.log_answer(ex, status, len(body))
        relay.drop_upstream(ex, reusable=ex.request_complete and upstream_keep_alive)
        relay.finish(ex)
        return True

    def note_answer(self, ex: Exchange) -> None:
        """An upstream answered in full: its latency, and a success for its health."""
        upstream = ex.upstream
        assert upstream is not None
        upstream.stats.observe(perf_counter() - ex.started)
        health = upstream.health
        if health.failing:
            health.record_success(self.relay.shared.clock())

    # -- responses in parts ----------------------------------------------------

    def response_head(self, conn: UpstreamLink, status: int, head: bytes) -> None:
        """Start the response, or go to the next upstream after a 502/503/504."""
        relay = self.relay
        ex = relay.active
        if ex is None or ex.conn is not conn:
            return
        if 100 <= status < 200 and status != 101:
            return  # interim responses are the proxy's business, not the client's
        prepared = ex.prepared
        assert prepared is not None
        if (
            status in RETRY_STATUSES
            and prepared.idempotent
            and not prepared.has_body
            and len(ex.tried) + 1 < relay.shared.tries_limit
        ):
            relay.failed(ex, ex.upstream, "status", f"upstream answered {status}")
            return
        tunnel = status == 101 and prepared.upgrade
        client_head, framing, keep_alive, until_close, _, upstream_keep_alive = prepare_response(
            head,
            status,
            head_only=ex.head_only,
            client_http11=ex.http11,
            client_keep_alive=ex.keep_alive and not relay.closing and not prepared.upgrade,
            tunnel=tunnel,
        )
        client_head = client_head[:-4] + self.answer_lines(ex) + b"\r\n\r\n"
        self.count(ex, status)
        conn.upstream_keep_alive = upstream_keep_alive
        conn.until_close = until_close
        ex.framing = framing
        ex.keep_alive = keep_alive
        ex.response_started = True
        ex.status = status
        relay.write(client_head)
        if tunnel:
            ex.tunnel = True
            relay.tunnel_to = conn
            conn.start_tunnel(relay.transport)
            relay.read_deadline = 0.0
            if ex.body_chunks:
                conn.send_lines(ex.body_chunks)
                ex.body_chunks = []
            relay.paused_for_queue = False
            relay.paused_for_upstream = False
            relay.update_reading()
            return
        if ex.head_only:
            # The parser cannot know a HEAD response has no body: finish here and
            # retire the connection rather than confuse its parser.
            conn.until_close = False
            self.response_complete(conn, reusable=False)

    def response_body(self, body: bytes) -> None:
        relay = self.relay
        ex = relay.active
        if ex is None or not ex.response_started:
            return
        ex.body_bytes += len(body)
        batch = relay.batch
        chunked = ex.framing == "chunked"
        if batch is None:
            transport = relay.transport
            if chunked:
                transport.writelines((b"%x\r\n" % len(body), body, b"\r\n"))
            else:
                transport.write(body)
        elif chunked:
            batch += (b"%x\r\n" % len(body), body, b"\r\n")
        else:
            batch.append(body)

    def response_complete(self, conn: UpstreamLink, reusable: bool = True) -> None:
        relay = self.relay
        ex = relay.active
        if ex is None or ex.conn is not conn:
            return
        if not ex.response_started:
            self.response_failed(conn, "error", "upstream closed before answering")
            return
        if ex.framing == "chunked":
            relay.write(CHUNK_END)
        self.note_answer(ex)
        relay.log_answer(ex, ex.status, ex.body_bytes)
        reusable = (
            reusable and ex.request_complete and not conn.until_close and conn.upstream_keep_alive
        )
        relay.drop_upstream(ex, reusable=reusable)
        relay.finish(ex)

    def response_failed(self, conn: UpstreamLink, kind: str, cause: str) -> None:
        relay = self.relay
        ex = relay.active
        if ex is None or ex.conn is not conn:
            conn.close()
            return
        upstream = ex.upstream
        assert upstream is not None
        if ex.response_started:
            # Too late for a clean error: the client sees the connection cut.
            upstream.stats.failures += 1
            upstream.health.record_failure(relay.shared.clock(), cause)
            relay.drop_upstream(ex, reusable=False)
            relay.close()
            return
        stale = conn.reused and not conn.got_bytes and kind == "error" and not ex.stale_retry
        if stale and ex.prepared is not None and ex.prepared.idempotent:
            # A pooled connection the upstream had already closed: try a fresh one,
            # as nginx does for cached connections, without counting a try.
            ex.stale_retry = True
            relay.drop_upstream(ex, reusable=False)
            upstream.stats.active += 1
            relay.shared.pool.connect(upstream, ex, relay.attach, relay.connect_failed)
            return
        relay.failed(ex, upstream, kind, cause)

    @staticmethod
    def count(ex: Exchange, status: int) -> None:
        """One more response of its status class from its upstream."""
        if ex.upstream is not None and 100 <= status < 600:
            ex.upstream.stats.responses[status // 100] += 1

    def answer_lines(self, ex: Exchange) -> bytes:
        return ex.request_id_line + self.hsts
