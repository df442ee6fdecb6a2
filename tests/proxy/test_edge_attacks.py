"""What an attacker tried at the edge: smuggling, freezing heads, stalls blamed upstream."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest

from proxy.server import ProxyServer
from tests.proxy.support import (
    RawUpstream,
    Response,
    exchange,
    get,
    read_response,
    running_proxy,
    serving,
    settings,
)

_SMUGGLED = b"GET /SMUGGLED HTTP/1.1\r\nHost: a\r\n\r\n"
SMUGGLING = (
    b"POST /x HTTP/1.1\r\nHost: a\r\nConnection: content-length\r\nContent-Length: %d\r\n\r\n"
    % len(_SMUGGLED)
    + _SMUGGLED
)


async def through_proxy(request_bytes: bytes, **overrides: object) -> tuple[Response, list[bytes]]:
    """One request through a proxy in front of a recording upstream: the answer, and the
    heads the upstream read."""
    upstream = await RawUpstream("ok").start()
    try:
        async with running_proxy(settings({"app1": upstream.port}, **overrides)) as proxy:
            return await exchange(proxy.port, request_bytes), upstream.heads
    finally:
        await upstream.stop()


def upstream_view(proxy: ProxyServer, name: str = "app1") -> dict[str, Any]:
    found = [u for u in proxy.snapshot()["upstreams"] if u["name"] == name]
    return found[0]


@pytest.mark.parametrize(
    ("request_bytes", "body"),
    [
        (SMUGGLING, SMUGGLING.partition(b"\r\n\r\n")[2]),
        (
            b"POST /x HTTP/1.1\r\nHost: a\r\nConnection: transfer-encoding, host\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n23\r\n" + _SMUGGLED + b"\r\n0\r\n\r\n",
            b"23\r\n" + _SMUGGLED + b"\r\n0\r\n\r\n",
        ),
    ],
    ids=["connection names content-length", "connection names transfer-encoding and host"],
)
async def test_connection_cannot_remove_framing_or_host(request_bytes: bytes, body: bytes) -> None:
    upstream = await RawUpstream("ok").start()
    try:
        async with running_proxy(settings({"app1": upstream.port})) as proxy:
            response = await exchange(proxy.port, request_bytes)
            assert response.status == 200
            # A second request would have been read by now, on the same pooled connection.
            await asyncio.sleep(0.2)
    finally:
        await upstream.stop()
    head = upstream.heads[0].lower()
    if b"chunked" in head:
        # The test upstream reads no chunked bodies: what followed the head is the body.
        assert b"".join(upstream.heads[1:]) == body
    else:
        assert len(upstream.heads) == 1, upstream.heads
    assert b"/smuggled" not in head
    assert b"\r\nhost: a\r\n" in head
    if b"content-length" in request_bytes.lower():
        assert b"\r\ncontent-length: %d\r\n" % len(_SMUGGLED) in head
        assert upstream.bodies == [body]
    else:
        assert b"\r\ntransfer-encoding: chunked\r\n" in head


def _freezing_head(lines: int) -> bytes:
    plain = b"".join(b"X-Plain-%d: some value\r\n" % i for i in range(lines))
    return b"GET / HTTP/1.1\r\nHost: a\r\n" + plain + b"Bad,Name: x\r\n\r\n"


async def _victim(port: int, count: int) -> list[float]:
    """`count` GETs on one keep-alive connection, each with a short deadline."""
    waits = []
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(count):
            started = time.perf_counter()
            writer.write(get("/victim"))
            async with asyncio.timeout(3):
                assert (await read_response(reader)).status == 200
            waits.append(time.perf_counter() - started)
            await asyncio.sleep(0.01)
    finally:
        writer.close()
    return waits


async def test_a_head_that_fails_late_does_not_freeze_other_clients() -> None:
    upstream = await RawUpstream("ok").start()
    try:
        async with running_proxy(settings({"app1": upstream.port})) as proxy:
            victim = asyncio.create_task(_victim(proxy.port, 30))

            async def attacker() -> list[int]:
                statuses = []
                for lines in (20, 24, 26, 28, 30, 40, 200):
                    head = _freezing_head(lines)
                    response = await exchange(proxy.port, head, within=3)
                    statuses.append(response.status)
                    # The same head split across two reads (the other way it was slow).
                    async with asyncio.timeout(3):
                        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
                        writer.write(head[: len(head) // 2])
                        await writer.drain()
                        await asyncio.sleep(0.01)
                        writer.write(head[len(head) // 2 :])
                        statuses.append((await read_response(reader)).status)
                        writer.close()
                return statuses

            statuses = await attacker()
            waits = await victim
    finally:
        await upstream.stop()
    assert statuses == [400] * len(statuses)
    assert len(waits) == 30
    assert not any(b"Bad,Name" in head for head in upstream.heads)


async def test_upgrade_on_a_request_with_a_body_is_refused_not_blamed_upstream() -> None:
    upstream = await RawUpstream("ok").start()
    try:
        conf = settings({"app1": upstream.port}, max_fails=1, proxy_read_timeout=1)
        async with running_proxy(conf) as proxy:
            for upgrade in (
                b"POST /test HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n"
                b"Content-Length: 3\r\n\r\nabc",
                b"POST /test HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
                b"DELETE /test HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n",
            ):
                response = await exchange(proxy.port, upgrade, within=3)
                assert response.status == 400
            assert (await exchange(proxy.port, get())).status == 200
            view = upstream_view(proxy)
    finally:
        await upstream.stop()
    assert view["up"] and view["failures"] == 0
    assert len(upstream.heads) == 1  # only the plain GET reached it


async def _stalled_body(port: int) -> tuple[int, float]:
    started = time.perf_counter()
    async with asyncio.timeout(10):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /test HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789")
        await writer.drain()
        response = await read_response(reader)
        writer.close()
    return response.status, time.perf_counter() - started


async def test_a_body_that_stops_short_is_the_clients_fault() -> None:
    """The upstream waits for the rest of the body: its proxy_read_timeout must not run
    while the client is still sending (nginx starts it once the request is sent)."""
    upstream = await RawUpstream("ok").start()
    try:
        conf = settings(
            {"app1": upstream.port}, max_fails=1, proxy_read_timeout=0.5, client_body_timeout=1.5
        )
        async with running_proxy(conf) as proxy:
            status, _ = await _stalled_body(proxy.port)
            view = upstream_view(proxy)
            assert (await exchange(proxy.port, get())).status == 200
    finally:
        await upstream.stop()
    assert status == 408
    assert view["up"] and view["failures"] == 0


async def test_an_upstream_that_accepts_and_never_answers_is_still_blamed() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(30)

    async with serving(silent) as port:
        conf = settings({"app1": port}, max_fails=1, proxy_read_timeout=0.5)
        async with running_proxy(conf) as proxy:
            response = await exchange(proxy.port, get(), within=5)
            view = upstream_view(proxy)
    assert response.status == 504
    assert view["failures"] == 1 and not view["up"]


async def test_a_slow_reader_is_cut_off_without_blaming_the_upstream() -> None:
    big = 16 * 1024 * 1024

    async def generous(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % big)
        chunk = b"x" * 65536
        for _ in range(big // len(chunk)):
            writer.write(chunk)
            await writer.drain()

    async with serving(generous) as port:
        conf = settings({"app1": port}, max_fails=1, proxy_read_timeout=0.5, send_timeout=1.5)
        async with running_proxy(conf) as proxy:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", proxy.port))
            reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
            writer.write(get())
            # Read nothing for longer than both timeouts: the client is the slow one.
            await asyncio.sleep(2.5)
            received = 0
            with pytest.raises(ConnectionError):  # cut off after send_timeout
                async with asyncio.timeout(10):
                    while chunk := await reader.read(1 << 20):
                        received += len(chunk)
                    raise ConnectionResetError("closed by the proxy")
            writer.close()
            view = upstream_view(proxy)
    assert received < big
    assert view["up"] and view["failures"] == 0


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET / RTSP/1.0\r\nHost: a\r\n\r\n", 400),
        (b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: host\r\n\r\n", 200),
    ],
    ids=["rtsp", "rtsp options", "http/2.0 in text", "connection names host"],
)
async def test_only_http_1x_is_forwarded(request_bytes: bytes, status: int) -> None:
    response, heads = await through_proxy(request_bytes)
    assert response.status == status
    if status == 200:
        assert b"\r\nHost: a\r\n" in heads[0]
    else:
        assert heads == []


async def test_http10_without_host_gets_the_proxys_address_as_host() -> None:
    upstream = await RawUpstream("ok").start()
    try:
        async with running_proxy(settings({"app1": upstream.port})) as proxy:
            response = await exchange(proxy.port, b"GET /old HTTP/1.0\r\n\r\n")
            port = proxy.port
    finally:
        await upstream.stop()
    assert response.status == 200
    head = upstream.heads[0]
    assert head.startswith(b"GET /old HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % port)
    assert head.count(b"\r\nHost:") == 1


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
        (b'GET / HTTP/1.1\r\nHost: "><script>\r\n\r\n', 400),
        (b"GET / HTTP/1.1\r\nHost: evil.test@a\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", 200),
        (b"GET / HTTP/1.1\r\nHost: shop.example.test:8080\r\n\r\n", 200),
    ],
    ids=[
        "coding before chunked",
        "chunked in http/1.0",
        "slash in host",
        "space in host",
        "markup in host",
        "userinfo in host",
        "ipv6 host",
        "name and port",
    ],
)
async def test_ambiguous_framing_and_hosts_are_refused(request_bytes: bytes, status: int) -> None:
    response, heads = await through_proxy(request_bytes)
    assert response.status == status
    assert len(heads) == (1 if status == 200 else 0)


SPOOFED = (
    b"GET /who HTTP/1.1\r\nHost: shop.test\r\nX-Forwarded-For: 203.0.113.9\r\n"
    b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.test\r\nX-Real-IP: 203.0.113.9\r\n\r\n"
)


@pytest.mark.parametrize(
    ("trusted", "expected"),
    [
        (
            "",
            b"X-Forwarded-Host: shop.test\r\nX-Forwarded-For: 127.0.0.1\r\n"
            b"X-Forwarded-Proto: http\r\nX-Real-IP: 127.0.0.1\r\n\r\n",
        ),
        (
            "10.0.0.0/8, 127.0.0.0/8",
            b"X-Forwarded-Host: evil.test\r\nX-Forwarded-For: 203.0.113.9, 127.0.0.1\r\n"
            b"X-Forwarded-Proto: https\r\nX-Real-IP: 203.0.113.9\r\n\r\n",
        ),
    ],
    ids=["untrusted peer", "peer in set_real_ip_from"],
)
async def test_only_trusted_peers_name_the_client(trusted: str, expected: bytes) -> None:
    response, heads = await through_proxy(SPOOFED, set_real_ip_from=trusted)
    assert response.status == 200
    head = heads[0]
    assert head.endswith(expected), head
    assert head.count(b"X-Forwarded-For") == 1 and head.count(b"X-Real-IP") == 1
