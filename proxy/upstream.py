"""The upstream side of forwarding: one keep-alive connection to an app server.

Responses are parsed by httptools' llhttp parser, or taken whole by the fast
paths; the head is rewritten from the raw bytes, the body handed on chunk by
chunk. Everything it learns goes to the `ResponseSink` attached for the current
exchange (records.py); it never names the client side. A full client write
buffer pauses reading here.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import httptools

from proxy.records import ClientFlow, ResponseSink, Shared, Upstream
from proxy.wire import MAX_HEADER_BYTES, WRITE_HIGH, lean_response_head, plain_response_head

logger = logging.getLogger("proxy")


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection to an upstream; carries one exchange at a time."""

    def __init__(self, shared: Shared, upstream: Upstream, connections: set[Any]) -> None:
        self.shared = shared
        self.stats = upstream.stats
        # The upstream's idle list and the pool's registry: a lost connection leaves both.
        self.idle = upstream.idle
        self.connections = connections
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.sink: ResponseSink | None = None
        self.flow: ClientFlow | None = None  # set with the sink
        # Bytes of a response head that spans several reads.
        self.buffered = b""
        self.current = b""
        self.head_start = 0
        self.awaiting_head = False
        self.reused = False
        self.got_bytes = False
        self.until_close = False
        self.upstream_keep_alive = False
        self.tunnel_to: asyncio.Transport | None = None
        self.read_deadline = 0.0
        self.idle_deadline = 0.0
        self.closed = False

    # -- used by the client side ----------------------------------------------
    def attach(self, sink: ResponseSink, flow: ClientFlow, read_deadline: float) -> None:
        """Carry the next exchange, reporting to `sink` and writing through `flow`; the
        connection is between responses (nothing buffered, not close-delimited)."""
        self.sink = sink
        self.flow = flow
        self.got_bytes = False
        self.until_close = False
        self.awaiting_head = True
        self.buffered = b""
        self.head_start = 0
        self.idle_deadline = 0.0
        self.read_deadline = read_deadline

    def detach(self) -> None:
        self.sink = self.flow = None
        self.read_deadline = 0.0

    def start_tunnel(self, client: asyncio.Transport) -> None:
        """After a 101: bytes from here on go to `client` as they are."""
        self.tunnel_to = client
        self.read_deadline = 0.0

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.stats.sent += len(data)
            self.transport.write(data)

    def send_lines(self, chunks: list[bytes]) -> None:
        if self.transport is not None and not self.closed:
            self.stats.sent += sum(map(len, chunks))
            self.transport.writelines(chunks)

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.read_deadline = 0.0
            self.transport.pause_reading()

    def resume_reading(self, read_deadline: float = 0.0) -> None:
        if self.transport is not None and not self.closed:
            self.read_deadline = read_deadline
            self.transport.resume_reading()

    def close(self) -> None:
        self.sink = self.flow = None
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def expire(self, now: float) -> None:
        if self.read_deadline and now > self.read_deadline:
            self.read_deadline = 0.0
            sink = self.sink
            if sink is not None and self.tunnel_to is None:
                sink.response_failed(self, "timeout", "upstream timed out (proxy_read_timeout)")
            elif sink is not None and self.flow is not None:
                self.flow.close()
        if self.idle_deadline and now > self.idle_deadline and self.sink is None:
            self.close()

    # -- asyncio callbacks -----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH)
        self.connections.add(self)

    def data_received(self, data: bytes) -> None:
        self.stats.received += len(data)
        sink = self.sink
        if sink is not None and self.awaiting_head and not self.buffered and not self.head_start:
            self.got_bytes = True
            # The lean path: a whole response with a plain head, in one read.
            head = lean_response_head(data)
            if head is not None and sink.lean_response(self, data, head):
                return
            # Fast path: a whole, well-formed, sized response in one read skips the parser.
            end = data.find(b"\r\n\r\n")
            if (
                end > 0
                and plain_response_head(data, end)
                and sink.whole_response(self, int(data[9:12]), data[:end], data[end + 4 :])
            ):
                return
        if self.tunnel_to is not None:
            self.tunnel_to.write(data)
            self.read_deadline = self.shared.now + self.shared.read_timeout
            return
        self.got_bytes = True
        if sink is None:
            self.close()  # unsolicited bytes on an idle connection
            return
        self.read_deadline = self.shared.now + self.shared.read_timeout
        flow = self.flow
        assert flow is not None
        flow.begin_read()
        self.current = data
        try:
            self.parser.feed_data(data)
            if self.awaiting_head:
                self.buffered += data
                if len(self.buffered) > MAX_HEADER_BYTES:
                    sink.response_failed(self, "error", "response header too large")
        except httptools.HttpParserUpgrade as upgrade:
            if self.sink is not None and self.tunnel_to is not None:
                rest = data[upgrade.args[0] :]
                if rest:
                    flow.write(rest)  # after the 101 head, in the same batch
        except httptools.HttpParserError as error:
            if self.sink is not None:
                self.sink.response_failed(self, "error", f"invalid response: {error}")
            if error.__context__ is not None:
                logger.error("bug while handling a response", exc_info=error.__context__)
        finally:
            flow.flush()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.connections.discard(self)
        if self in self.idle:
            self.idle.remove(self)
        sink, flow = self.sink, self.flow
        self.sink = None
        if sink is not None:
            if self.tunnel_to is not None and flow is not None:
                flow.close()
            elif self.until_close:
                sink.response_complete(self)
            else:
                cause = "connection reset" if exc is not None else "connection closed"
                sink.response_failed(self, "error", f"{cause} by upstream")

    def pause_writing(self) -> None:
        # An upstream that stops taking the request body is the one late (nginx's
        # proxy_send_timeout, here proxy_read_timeout); the client we stop reading is not.
        flow = self.flow
        if self.sink is not None and flow is not None:
            self.read_deadline = self.shared.now + self.shared.read_timeout
            flow.upstream_paused(True)

    def resume_writing(self) -> None:
        flow = self.flow
        if self.sink is not None and flow is not None:
            complete = flow.request_complete()
            self.read_deadline = self.shared.now + self.shared.read_timeout if complete else 0.0
            flow.upstream_paused(False)

    # -- httptools callbacks ---------------------------------------------------
    # No on_status/on_header: the head is taken raw from the received bytes,
    # which spares a Python call per header line.
    def on_headers_complete(self) -> None:
        raw = self.buffered + self.current if self.buffered else self.current
        start = self.head_start
        end = raw.find(b"\r\n\r\n", start)
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self.head_start = end + 4  # an interim response: the real head follows
            return
        self.awaiting_head = False
        self.buffered = b""
        self.head_start = 0
        sink = self.sink
        if sink is not None:
            sink.response_head(self, status, raw[start:end])

    def on_body(self, body: bytes) -> None:
        sink = self.sink
        if sink is not None:
            sink.response_body(body)

    def on_message_complete(self) -> None:
        sink = self.sink
        if sink is not None and self.tunnel_to is None:
            sink.response_complete(self)
