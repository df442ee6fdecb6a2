"""Bad requests get a 4xx, are never forwarded, and slow clients are cut off."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from tests.proxy.support import RawUpstream, exchange, running_proxy, settings

BAD_REQUESTS = {
    "content-length and transfer-encoding": (
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n",
        400,
    ),
    "conflicting content-length": (
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        400,
    ),
    "content-length list": (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\n\r\nabc", 400),
    "obsolete line folding": (b"GET / HTTP/1.1\r\nHost: h\r\nX-A: b\r\n  folded\r\n\r\n", 400),
    "space in header name": (b"GET / HTTP/1.1\r\nHost: h\r\nX A: b\r\n\r\n", 400),
    "space before colon": (b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400),
    "control character in value": (b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x01b\r\n\r\n", 400),
    "unknown method": (b"BREW / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    "lower-case method": (b"get / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    "connect method": (b"CONNECT h:443 HTTP/1.1\r\nHost: h\r\n\r\n", 405),
    "trace method": (b"TRACE / HTTP/1.1\r\nHost: h\r\n\r\n", 405),
    "bare line feeds": (b"GET / HTTP/1.1\nHost: h\n\n", 400),
    "missing host": (b"GET / HTTP/1.1\r\n\r\n", 400),
    "two hosts": (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    "unsupported transfer-encoding": (
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
        400,
    ),
    "absolute target": (b"GET http://other/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    "request line too long": (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: h\r\n\r\n", 414),
    "headers too large": (
        b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X-Big: " + b"b" * 40_000 + b"\r\n\r\n",
        431,
    ),
    "body over client_max_body_size": (
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 20000\r\n\r\n",
        413,
    ),
    "chunked body over client_max_body_size": (
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"3000\r\n"
        + b"z" * 0x3000
        + b"\r\n0\r\n\r\n",
        413,
    ),
}


@pytest.fixture
async def upstream() -> RawUpstream:  # type: ignore[misc]
    server = await RawUpstream("ok").start()
    yield server
    await server.stop()


async def test_bad_requests_are_refused_and_never_forwarded(upstream: RawUpstream) -> None:
    proxy_settings = settings({"app1": upstream.port}, client_max_body_size="10k")
    async with running_proxy(proxy_settings) as proxy:
        for name, (request, status) in BAD_REQUESTS.items():
            response = await exchange(proxy.port, request)
            assert response.status == status, name
            assert response.headers["connection"] == "close", name
        assert (await exchange(proxy.port, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")).status == 200
    assert len(upstream.heads) == 1  # only the good request at the end


async def test_trickling_client_headers_are_cut_off(upstream: RawUpstream) -> None:
    proxy_settings = settings({"app1": upstream.port}, client_header_timeout=0.5)
    async with running_proxy(proxy_settings) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        started = time.monotonic()
        answer = b""
        for byte in b"GET / HTTP/1.1\r\nHost: h\r\nX-Slow: " + b"s" * 40:
            writer.write(bytes([byte]))
            await asyncio.sleep(0.05)
            if reader.at_eof() or writer.is_closing():
                break
            try:
                answer += await asyncio.wait_for(reader.read(1000), 0.001)
            except TimeoutError:
                continue
            if answer:
                break
        answer += await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert time.monotonic() - started < 2.5
    assert upstream.heads == []


async def test_client_that_stops_sending_its_body_is_cut_off(upstream: RawUpstream) -> None:
    proxy_settings = settings({"app1": upstream.port}, client_body_timeout=0.3)
    async with running_proxy(proxy_settings) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc")
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408 ")
    # The upstream connection it held was given up, not kept waiting.
    assert upstream.writers == set() or all(w.is_closing() for w in upstream.writers)


async def test_idle_keep_alive_client_is_closed(upstream: RawUpstream) -> None:
    proxy_settings = settings({"app1": upstream.port}, keepalive_timeout=0.3)
    async with running_proxy(proxy_settings) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        first = await asyncio.wait_for(reader.readuntil(b"ok"), 5)
        assert first.startswith(b"HTTP/1.1 200")
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()


async def test_upstream_stuck_in_its_accept_queue_gives_504() -> None:
    # A listening socket that never accepts: the handshake completes in the kernel's
    # queue, nothing ever answers, and proxy_read_timeout ends it with a 504.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(0)
        port = sock.getsockname()[1]
        proxy_settings = settings(
            {"stuck": port}, proxy_read_timeout=0.3, proxy_connect_timeout=0.3
        )
        async with running_proxy(proxy_settings) as proxy:
            response = await exchange(proxy.port, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert response.status == 504
    assert b"stuck: " in response.body and b"timed out" in response.body
