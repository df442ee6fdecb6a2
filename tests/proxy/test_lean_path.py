"""The lean path: what its patterns take (a strict subset of the parser's) and what it sends."""

from __future__ import annotations

import asyncio
import re

import pytest

from proxy.wire import LEAN_REQUEST, LEAN_RESPONSE, lean_head, name_other_than
from tests.proxy.support import RawUpstream, read_response, running_proxy, settings

PLAIN_GET = (
    b"GET /a/b?c=%20d HTTP/1.1\r\nUser-Agent: wrk\r\nHost: shop.test:8080\r\n"
    b"Accept: */*\r\nCookie: JSESSIONID=ABC-n1.app1\r\nX-Forwarded-Port: 80\r\n"
    b"Hostname: x\r\nTea: 1\r\nContents: 2\r\nEmpty: \r\n\r\n"
)


def test_a_plain_request_is_taken_with_its_host() -> None:
    match = LEAN_REQUEST.fullmatch(PLAIN_GET)
    assert match is not None
    assert match.groups() == (b"GET", b"/a/b?c=%20d", None, None, b"shop.test:8080", None)
    lower_host = b"HEAD / HTTP/1.1\r\nhost: h\r\n\r\n"
    assert LEAN_REQUEST.fullmatch(lower_host) is not None


def test_one_connection_keep_alive_is_taken_before_or_after_host() -> None:
    before = b"GET / HTTP/1.1\r\nA: 1\r\nConnection: keep-alive\r\nB: 2\r\nHost: h\r\n\r\n"
    match = LEAN_REQUEST.fullmatch(before)
    assert match is not None
    assert match.groups() == (b"GET", b"/", b"Connection: keep-alive\r\n", b"h", None, None)
    after = b"GET / HTTP/1.1\r\nhost: h\r\nconnection: Keep-Alive\r\nB: 2\r\n\r\n"
    match = LEAN_REQUEST.fullmatch(after)
    assert match is not None
    assert match.groups() == (b"GET", b"/", None, None, b"h", b"connection: Keep-Alive\r\n")


@pytest.mark.parametrize(
    "lines",
    [
        b"Connection: keep-alive\r\nHost: h\r\nConnection: keep-alive\r\n",
        b"Connection: keep-alive\r\nConnection: keep-alive\r\nHost: h\r\n",
        b"Host: h\r\nConnection: keep-alive\r\nConnection: keep-alive\r\n",
        b"Host: h\r\nConnection: close\r\n",
        b"Host: h\r\nConnection: keep-alive, X-Hop\r\n",
        b"Host: h\r\nConnection:keep-alive\r\n",
        b"Host: h\r\nConnection: keep-alive \r\n",
        b"Connection: keep-alive\r\n",
    ],
)
def test_any_other_connection_header_goes_to_the_other_paths(lines: bytes) -> None:
    assert LEAN_REQUEST.fullmatch(b"GET / HTTP/1.1\r\n" + lines + b"\r\n") is None


@pytest.mark.parametrize(
    "header",
    [
        b"Content-Length: 0",
        b"CONTENT-LENGTH: 0",
        b"transfer-encoding: chunked",
        b"Connection: close",
        b"Connection: upgrade",
        b"Keep-Alive: 5",
        b"TE: trailers",
        b"Trailer: x",
        b"Upgrade: websocket",
        b"Expect: 100-continue",
        b"Proxy-Authorization: x",
        b"proxy-connection: close",
        b"X-Forwarded-For: 192.0.2.1",
        b"x-forwarded-host: h",
        b"X-Forwarded-Proto: https",
        b"X-Real-IP: 192.0.2.1",
        b"Host: second",
        b"X-Trailing: space ",
        b"X-No-Space:value",
        b"X-Two-Spaces:  value",
        b"X A: b",
        b"Host2 : x",
        b"X-Ctl: a\x01b",
        b"X-Nul: a\x00b",
        b"X-Fold: a\r\n folded",
    ],
)
def test_anything_special_or_not_canonical_goes_to_the_other_paths(header: bytes) -> None:
    request = b"GET / HTTP/1.1\r\nHost: h\r\n" + header + b"\r\n\r\n"
    assert LEAN_REQUEST.fullmatch(request) is None


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST / HTTP/1.1\r\nHost: h\r\n\r\n",
        b"get / HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET / HTTP/1.0\r\nHost: h\r\n\r\n",
        b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\nHost: h\n\n",
        b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
    ],
)
def test_other_requests_go_to_the_other_paths(request_bytes: bytes) -> None:
    assert LEAN_REQUEST.fullmatch(request_bytes) is None


NGINX_HEAD = (
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 2\r\nConnection: keep-alive\r\n\r\n"
)


def test_a_plain_response_gives_status_length_and_its_connection_line() -> None:
    match = LEAN_RESPONSE.match(NGINX_HEAD + b"ok")
    assert match is not None
    assert match.end() == len(NGINX_HEAD)
    assert (
        match.groups() == (b"200", b"2", b"\r\nConnection: keep-alive", b"keep-alive") + (None,) * 3
    )
    closing = b"HTTP/1.1 404 Not Found\r\nconnection: close\r\nX: y\r\ncontent-length: 0\r\n\r\n"
    match = LEAN_RESPONSE.match(closing)
    assert match is not None
    assert match.groups() == (b"404", None, None, None, b"\r\nconnection: close", None, b"0")
    bare = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nTest: 1\r\n\r\n"
    assert LEAN_RESPONSE.match(bare) is not None


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=5\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: upgrade\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close, x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\nConnection: close\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nProxy-Foo: 1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTE: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX: a\r\n folded\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX: a\x00b\r\n\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 2\n\n",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 2\r\n\r\n",
    ],
)
def test_other_responses_go_to_the_other_paths(head: bytes) -> None:
    assert LEAN_RESPONSE.match(head + b"ok") is None


def test_name_other_than_takes_prefixes_and_exact_names() -> None:
    names = re.compile(name_other_than("te", "proxy-"))
    assert names.fullmatch(b"Tea:") and names.fullmatch(b"Proxy:") and names.fullmatch(b"X:")
    assert not names.fullmatch(b"TE:") and not names.fullmatch(b"proxy-x:")


async def test_lean_request_reaches_upstream_byte_exact_and_response_loses_connection() -> None:
    upstream = await RawUpstream(
        "ok",
        response=b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n"
        b"Content-Type: text/plain\r\n\r\nok",
    ).start()
    try:
        async with running_proxy(settings({"app1": upstream.port})) as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            for _ in range(2):
                writer.write(PLAIN_GET)
                response = await asyncio.wait_for(read_response(reader), 5)
                assert response.raw_head == (
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\n"
                )
                assert response.body == b"ok"
            writer.close()
    finally:
        await upstream.stop()
    assert upstream.connections == 1  # the pooled connection was reused
    assert (
        upstream.heads
        == [
            PLAIN_GET[:-2] + b"X-Forwarded-Host: shop.test:8080\r\n"
            b"X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\nX-Real-IP: 127.0.0.1\r\n\r\n"
        ]
        * 2
    )


async def test_upstream_connection_close_is_not_pooled_and_client_stays() -> None:
    upstream = await RawUpstream(
        "ok", response=b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    ).start()
    try:
        async with running_proxy(settings({"app1": upstream.port})) as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            for _ in range(3):
                writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
                response = await asyncio.wait_for(read_response(reader), 5)
                assert response.raw_head == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
            writer.close()
    finally:
        await upstream.stop()
    assert upstream.connections == 3


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /p?q=1 HTTP/1.1\r\nHost: shop.test\r\nConnection: keep-alive\r\n"
        b"Accept: */*\r\nCookie: a=b\r\n\r\n",
        b"GET /p?q=1 HTTP/1.1\r\nConnection: keep-alive\r\nHost: shop.test\r\n"
        b"Accept: */*\r\nCookie: a=b\r\n\r\n",
        b"GET /p?q=1 HTTP/1.1\r\nHost: shop.test\r\nAccept: */*\r\nCookie: a=b\r\n"
        b"connection: Keep-Alive\r\n\r\n",
    ],
)
async def test_connection_keep_alive_is_removed_byte_exact_as_on_the_parser_path(
    request_bytes: bytes,
) -> None:
    assert LEAN_REQUEST.fullmatch(request_bytes) is not None
    upstream = await RawUpstream("ok").start()
    try:
        async with running_proxy(settings({"app1": upstream.port})) as proxy:
            # Whole in one read: the lean path.
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(request_bytes)
            assert (await asyncio.wait_for(read_response(reader), 5)).status == 200
            writer.close()
            # Split over two reads: the parser path.
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(request_bytes[:20])
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(request_bytes[20:])
            assert (await asyncio.wait_for(read_response(reader), 5)).status == 200
            writer.close()
    finally:
        await upstream.stop()
    expected = (
        b"GET /p?q=1 HTTP/1.1\r\nHost: shop.test\r\nAccept: */*\r\nCookie: a=b\r\n"
        b"X-Forwarded-Host: shop.test\r\nX-Forwarded-For: 127.0.0.1\r\n"
        b"X-Forwarded-Proto: http\r\nX-Real-IP: 127.0.0.1\r\n\r\n"
    )
    assert upstream.heads == [expected, expected]


def test_a_response_plan_is_what_the_lean_path_needs_of_a_head() -> None:
    match = LEAN_RESPONSE.match(NGINX_HEAD + b"ok")
    assert match is not None
    cut = NGINX_HEAD.index(b"\r\nConnection")
    assert lean_head(match) == (len(NGINX_HEAD), 2, cut, cut + 24, True)
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    match = LEAN_RESPONSE.match(closing)
    assert match is not None
    assert lean_head(match) == (len(closing), 0, 15, 34, False)
    bare = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n"
    match = LEAN_RESPONSE.match(bare + b"x")
    assert match is not None
    assert lean_head(match) == (len(bare), 1, 0, 0, True)


async def test_a_repeated_head_with_a_body_in_two_reads_goes_to_the_parser_path() -> None:
    """The second answer has the same head as the first, but not its whole body in one read."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n"
    connections = 0

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            for number in range(3):
                await reader.readuntil(b"\r\n\r\n")
                if number == 1:
                    writer.write(head + b"o")
                    await writer.drain()
                    await asyncio.sleep(0.05)
                    writer.write(b"k")
                else:
                    writer.write(head + b"ok")
                await writer.drain()
            await reader.read()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with running_proxy(settings({"app1": port})) as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            for _ in range(3):
                writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
                response = await asyncio.wait_for(read_response(reader), 5)
                assert response.raw_head == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
                assert response.body == b"ok"
            writer.close()
    finally:
        server.close()
        await server.wait_closed()
    assert connections == 1
