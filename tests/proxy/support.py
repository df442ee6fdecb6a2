"""Real upstream servers on loopback, raw HTTP clients and a proxy factory for the tests."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from proxy.server import ProxyServer
from proxy.settings import ProxySettings, settings_from_mapping

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

OK_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


@dataclass(kw_only=True)
class LoopbackServer:
    """A test server on loopback whose `stop()` acts like a killed process."""

    server: asyncio.Server | None = None
    writers: set[asyncio.StreamWriter] = field(default_factory=set)
    handlers: set[asyncio.Task[Any]] = field(default_factory=set)

    @contextlib.contextmanager
    def serving(self, writer: asyncio.StreamWriter) -> Iterator[None]:
        """Around one connection's handler: tracked for stop(), closed when it ends."""
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        self.writers.add(writer)
        try:
            yield
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.writers.discard(writer)
            self.handlers.discard(task)
            writer.close()

    async def stop(self) -> None:
        """Stop listening and drop every open connection."""
        if self.server is not None:
            self.server.close()
            self.server = None
        for writer in list(self.writers):
            writer.transport.abort()
        if self.handlers:
            await asyncio.wait(list(self.handlers), timeout=2)


# The proxy's X-Request-ID: the last line of a forwarded head, one line of an answer.
_FORWARDED_ID = re.compile(rb"\r\nX-Request-ID: ([0-9a-f]{24})(?=\r\n\r\n$)")
_ANSWER_ID = re.compile(rb"\r\nX-Request-ID: ([0-9a-f]{24})(?=\r\n)")


def split_request_id(head: bytes, line: re.Pattern[bytes] = _ANSWER_ID) -> tuple[bytes, bytes]:
    """(the head less its one X-Request-ID line, the id); a head with none, or more than
    one, comes back whole, so that a byte-exact comparison with it still fails."""
    found = line.findall(head)
    if len(found) != 1 or head.count(b"X-Request-ID") != 1:
        return head, b""
    return line.sub(b"", head), found[0]


@dataclass
class RawUpstream(LoopbackServer):
    """An HTTP upstream written with raw streams: records every request head it reads
    (less the proxy's X-Request-ID line, which goes to `request_ids`)."""

    name: str
    response: bytes = OK_RESPONSE
    heads: list[bytes] = field(default_factory=list)
    request_ids: list[bytes] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    connections: int = 0
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with self.serving(writer):
            while True:
                head, request_id = split_request_id(
                    await reader.readuntil(b"\r\n\r\n"), _FORWARDED_ID
                )
                self.heads.append(head)
                self.request_ids.append(request_id)
                body = b""
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        body = await reader.readexactly(int(line.split(b":")[1]))
                self.bodies.append(body)
                writer.write(self.response.replace(b"ok", self.name.encode()[:2]))
                await writer.drain()

    async def start(self, port: int = 0) -> RawUpstream:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self


@contextlib.asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[int]:
    """A loopback server running `handler` per connection; yields its port."""
    tasks: set[asyncio.Task[None]] = set()

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(tracked, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def settings(upstreams: dict[str, int], **overrides: object) -> ProxySettings:
    raw: dict[str, object] = {
        "listen": "127.0.0.1:0",
        "upstreams": ",".join(f"{name}=127.0.0.1:{port}" for name, port in upstreams.items()),
        "policy": "round_robin",
        "health_interval": 0,
        "proxy_connect_timeout": 2,
        "proxy_read_timeout": 2,
    }
    raw.update(overrides)
    return settings_from_mapping(raw)


@contextlib.asynccontextmanager
async def running_proxy(proxy_settings: ProxySettings) -> AsyncIterator[ProxyServer]:
    async with ProxyServer(proxy_settings) as proxy:
        yield proxy


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    raw_head: bytes  # less the proxy's X-Request-ID line (in request_id)
    request_id: bytes = b""


async def read_response(reader: asyncio.StreamReader) -> Response:
    """One HTTP/1.1 response: sized, chunked or delimited by close."""
    head, request_id = split_request_id(await reader.readuntil(b"\r\n\r\n"))
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(parts)
    elif status in (101, 204, 304):
        body = b""
    else:
        body = await reader.read()
    return Response(status, headers, body, head, request_id)


async def exchange(port: int, request: bytes, within: float = 5.0) -> Response:
    """Send raw request bytes on a fresh connection and read one response."""
    async with asyncio.timeout(within):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(request)
            return await read_response(reader)
        finally:
            writer.close()


def get(path: str = "/", extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: example.test\r\n{extra}\r\n".encode()
