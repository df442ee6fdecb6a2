"""The upstream side of forwarding: one keep-alive connection to an app server.

Responses are parsed by httptools' llhttp parser, or taken whole by the fast
path; the head is rewritten from the raw bytes, the body handed to the client
connection chunk by chunk. A full client write buffer pauses reading here.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, cast

import httptools

from proxy.lean import response_plan, take_response
from proxy.wire import LEAN_RESPONSE, MAX_HEADER_BYTES, WRITE_HIGH, plain_response_head

if TYPE_CHECKING:
    from proxy.forward import Forwarder
    from proxy.relay import Relay
    from proxy.server import Upstream

logger = logging.getLogger("proxy")


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection to an upstream; carries one exchange at a time."""

    def __init__(self, forwarder: Forwarder, upstream: Upstream) -> None:
        self.forwarder = forwarder
        self.upstream = upstream
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.client: Relay | None = None
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

    # -- asyncio callbacks -----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH)
        self.forwarder.connections.add(self)

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is not None and self.awaiting_head and not self.buffered and not self.head_start:
            # The lean path: a whole response with a plain head, in one read.
            match = LEAN_RESPONSE.match(data)
            if match is not None:
                self.got_bytes = True
                if take_response(client, self, data, response_plan(match)):
                    return
        if self.tunnel_to is not None:
            self.tunnel_to.write(data)
            self.read_deadline = self.forwarder.now + self.forwarder.read_timeout
            return
        self.got_bytes = True
        if self.client is None:
            self.close()  # unsolicited bytes on an idle connection
            return
        self.read_deadline = self.forwarder.now + self.forwarder.read_timeout
        client = self.client
        if self.awaiting_head and not self.buffered and not self.head_start:
            # Fast path: a whole, well-formed, sized response in one read (the common
            # case for small answers) skips the parser and its callbacks.
            end = data.find(b"\r\n\r\n")
            if (
                end > 0
                and plain_response_head(data, end)
                and client.upstream_whole(self, int(data[9:12]), data[:end], data[end + 4 :])
            ):
                return
        client.batch = []
        self.current = data
        try:
            self.parser.feed_data(data)
            if self.awaiting_head:
                self.buffered += data
                if len(self.buffered) > MAX_HEADER_BYTES:
                    client.upstream_failed(self, "error", "response header too large")
        except httptools.HttpParserUpgrade as upgrade:
            if self.client is not None and self.tunnel_to is not None:
                rest = data[upgrade.args[0] :]
                if rest:
                    client.write(rest)  # after the 101 head, in the same batch
        except httptools.HttpParserError as error:
            if self.client is not None:
                self.client.upstream_failed(self, "error", f"invalid response: {error}")
            if error.__context__ is not None:
                logger.error("bug while handling a response", exc_info=error.__context__)
        finally:
            client.flush()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.forwarder.connections.discard(self)
        idle = self.upstream.idle
        if self in idle:
            idle.remove(self)
        client = self.client
        self.client = None
        if client is not None:
            if self.tunnel_to is not None:
                client.close()
            elif self.until_close:
                client.upstream_complete(self)
            else:
                cause = "connection reset" if exc is not None else "connection closed"
                client.upstream_failed(self, "error", f"{cause} by upstream")

    def pause_writing(self) -> None:
        # An upstream that stops taking the request body is the one late (nginx's
        # proxy_send_timeout, here proxy_read_timeout); the client we stop reading is not.
        client = self.client
        if client is not None:
            self.read_deadline = self.forwarder.now + self.forwarder.read_timeout
            client.pause_reading_for_upstream(True)

    def resume_writing(self) -> None:
        client = self.client
        if client is not None:
            forwarder = self.forwarder
            complete = client.request_complete()
            self.read_deadline = forwarder.now + forwarder.read_timeout if complete else 0.0
            client.pause_reading_for_upstream(False)

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
        client = self.client
        if client is not None:
            client.upstream_head(self, status, raw[start:end])

    def on_body(self, body: bytes) -> None:
        client = self.client
        if client is not None:
            client.upstream_body(body)

    def on_message_complete(self) -> None:
        client = self.client
        if client is not None and self.tunnel_to is None:
            client.upstream_complete(self)

    # -- used by the client side ----------------------------------------------
    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def close(self) -> None:
        self.client = None
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def expire(self, now: float) -> None:
        if self.read_deadline and now > self.read_deadline:
            self.read_deadline = 0.0
            client = self.client
            if client is not None and self.tunnel_to is None:
                client.upstream_failed(self, "timeout", "upstream timed out (proxy_read_timeout)")
            elif client is not None:
                client.close()
        if self.idle_deadline and now > self.idle_deadline and self.client is None:
            self.close()
