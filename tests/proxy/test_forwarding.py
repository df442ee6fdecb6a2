"""Forwarding through a real proxy to real upstream servers on loopback."""

from __future__ import annotations

import asyncio
import json

import aiohttp
from aiohttp import web

from tests.proxy.support import (
    RawUpstream,
    exchange,
    get,
    read_response,
    running_proxy,
    serving,
    settings,
)


async def test_byte_exact_request_reaches_upstream() -> None:
    upstream = await RawUpstream("app1").start()
    try:
        async with running_proxy(settings({"app1": upstream.port})) as proxy:
            response = await exchange(
                proxy.port,
                b"GET /test;jsessionid=X.app1?q=1 HTTP/1.1\r\nHost: shop.test:8080\r\n"
                b"Connection: keep-alive, X-Hop\r\nX-Hop: secret\r\nKeep-Alive: 300\r\n"
                b"TE: trailers\r\nUpgrade: h2c\r\nProxy-Connection: keep-alive\r\n"
                b"X-Forwarded-For: 192.0.2.1\r\nAccept-Encoding: gzip\r\n\r\n",
            )
    finally:
        await upstream.stop()
    assert response.status == 200
    assert response.body == b"ap"
    assert upstream.heads == [
        b"GET /test;jsessionid=X.app1?q=1 HTTP/1.1\r\n"
        b"Host: shop.test:8080\r\n"
        b"Accept-Encoding: gzip\r\n"
        b"X-Forwarded-Host: shop.test:8080\r\n"
        # Not a set_real_ip_from peer: its X-Forwarded-For is replaced, not appended to.
        b"X-Forwarded-For: 127.0.0.1\r\n"
        b"X-Forwarded-Proto: http\r\n"
        b"X-Real-IP: 127.0.0.1\r\n\r\n"
    ]


async def test_byte_exact_simple_get_on_the_fast_path() -> None:
    upstream = await RawUpstream("app1").start()
    try:
        async with running_proxy(settings({"app1": upstream.port})) as proxy:
            response = await exchange(
                proxy.port,
                b"GET /a/b?c=%20d HTTP/1.1\r\nHost: shop.test\r\nConnection: X-Hop\r\n"
                b"X-Hop: 1\r\nProxy-Authorization: x\r\nX-Real-IP: 6.6.6.6\r\n"
                b"Cookie: a=b  \r\n\r\n",
            )
    finally:
        await upstream.stop()
    assert response.status == 200
    assert upstream.heads == [
        b"GET /a/b?c=%20d HTTP/1.1\r\n"
        b"Host: shop.test\r\n"
        b"Cookie: a=b\r\n"
        b"X-Forwarded-Host: shop.test\r\n"
        b"X-Forwarded-For: 127.0.0.1\r\n"
        b"X-Forwarded-Proto: http\r\n"
        b"X-Real-IP: 127.0.0.1\r\n\r\n"
    ]


async def test_keep_alive_both_sides_reuses_one_upstream_connection() -> None:
    upstream = await RawUpstream("app1").start()
    try:
        async with running_proxy(settings({"app1": upstream.port})) as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            for _ in range(3):
                writer.write(get("/x"))
                response = await asyncio.wait_for(read_response(reader), 5)
                assert response.status == 200
            writer.close()
    finally:
        await upstream.stop()
    assert upstream.connections == 1
    assert len(upstream.heads) == 3


async def test_pipelined_requests_head_and_http10_keep_alive() -> None:
    upstream = await RawUpstream("ok").start()
    try:
        async with running_proxy(settings({"app1": upstream.port})) as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(get("/one") + get("/two") + b"HEAD /three HTTP/1.1\r\nHost: h\r\n\r\n")
            first = await asyncio.wait_for(read_response(reader), 5)
            second = await asyncio.wait_for(read_response(reader), 5)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert (first.body, second.body) == (b"ok", b"ok")
            assert head.startswith(b"HTTP/1.1 200 OK") and b"Content-Length: 2" in head
            writer.write(get("/four"))  # the connection still works after the HEAD
            assert (await asyncio.wait_for(read_response(reader), 5)).body == b"ok"
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(b"GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            old = await asyncio.wait_for(read_response(reader), 5)
            assert old.headers["connection"] == "keep-alive"
            writer.write(b"GET /old HTTP/1.0\r\n\r\n")
            old = await asyncio.wait_for(read_response(reader), 5)
            assert old.headers["connection"] == "close"
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
    finally:
        await upstream.stop()
    assert [head.split(b" ")[1] for head in upstream.heads] == [
        b"/one",
        b"/two",
        b"/three",
        b"/four",
        b"/old",
        b"/old",
    ]


async def test_round_robin_alternates_and_sticky_follows_route() -> None:
    app1, app2 = await RawUpstream("a1").start(), await RawUpstream("b2").start()
    ports = {"app1": app1.port, "app2": app2.port}
    try:
        async with running_proxy(settings(ports)) as proxy:
            bodies = [(await exchange(proxy.port, get())).body for _ in range(4)]
            assert bodies == [b"a1", b"b2", b"a1", b"b2"]
        async with running_proxy(settings(ports, policy="sticky")) as proxy:
            sticky = get("/", "Cookie: JSESSIONID=ABCDEF-n1.app2\r\n")
            assert [(await exchange(proxy.port, sticky)).body for _ in range(3)] == [b"b2"] * 3
            in_path = b"GET /t;jsessionid=ABCDEF-n1.app1 HTTP/1.1\r\nHost: h\r\n\r\n"
            assert [(await exchange(proxy.port, in_path)).body for _ in range(3)] == [b"a1"] * 3
            await app2.stop()  # the owner of the route dies: failover to app1
            assert (await exchange(proxy.port, sticky)).body == b"a1"
            assert (await exchange(proxy.port, sticky)).body == b"a1"
    finally:
        await app1.stop()
        await app2.stop()


async def test_refused_upstream_goes_to_next_and_counts_retry() -> None:
    live = await RawUpstream("ok").start()
    dead = await RawUpstream("xx").start()
    dead_port = dead.port
    await dead.stop()
    try:
        async with running_proxy(settings({"dead": dead_port, "live": live.port})) as proxy:
            for _ in range(3):
                response = await exchange(proxy.port, get())
                assert (response.status, response.body) == (200, b"ok")
            status = json.loads((await exchange(proxy.port, get("/_proxy/status.json"))).body)
    finally:
        await live.stop()
    by_name = {u["name"]: u for u in status["upstreams"]}
    assert by_name["dead"]["state"] == "down"
    assert by_name["dead"]["reason"] == "connection refused"
    assert by_name["dead"]["retries"] == 1 and by_name["dead"]["failures"] == 1
    assert status["retries"] == 1
    assert by_name["live"]["requests"] == 3
    assert [e["text"].split()[:2] for e in status["health_log"]] == [["dead", "DOWN"]]


async def test_upstream_that_never_answers_gives_504_or_retry_for_get_only() -> None:
    accepted = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        await reader.read()  # reads the request, never answers

    live = await RawUpstream("ok").start()
    try:
        async with serving(silent) as silent_port:
            only_silent = settings({"silent": silent_port}, proxy_read_timeout=0.4)
            async with running_proxy(only_silent) as proxy:
                response = await exchange(proxy.port, get())
                assert response.status == 504
                assert b"silent: upstream timed out" in response.body
            both = settings(
                {"silent": silent_port, "live": live.port}, proxy_read_timeout=0.4, max_fails=0
            )
            async with running_proxy(both) as proxy:
                assert (await exchange(proxy.port, get())).body == b"ok"  # GET: retried
                post = b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
                response = await exchange(proxy.port, post)
                assert response.status in (200, 504)
                if response.status == 200:  # round robin sent it to live; next one is silent
                    response = await exchange(proxy.port, post)
                assert response.status == 504  # POST: body delivered, never re-sent
    finally:
        await live.stop()
    assert accepted.is_set()
    assert live.bodies.count(b"abc") <= 1


async def test_post_not_retried_after_delivery() -> None:
    received: list[bytes] = []

    async def dies_after_reading(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        received.append(await reader.readuntil(b"\r\n\r\n") + await reader.readexactly(4))
        writer.transport.abort()  # crash without answering

    other = await RawUpstream("ok").start()
    try:
        async with serving(dies_after_reading) as port:
            proxy_settings = settings({"dying": port, "other": other.port})
            async with running_proxy(proxy_settings) as proxy:
                post = b"POST /buy HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\ndata"
                response = await exchange(proxy.port, post)
                assert response.status == 502
                assert b"dying" in response.body
                get_response = await exchange(proxy.port, get())
                assert get_response.status == 200
    finally:
        await other.stop()
    assert len(received) == 1
    assert other.bodies == [b""]  # only the GET reached the other upstream


async def test_502_503_504_retried_for_get_not_for_post() -> None:
    bad = await RawUpstream(
        "no", response=b"HTTP/1.1 503 Busy\r\nContent-Length: 2\r\n\r\nno"
    ).start()
    good = await RawUpstream("ok").start()
    try:
        proxy_settings = settings({"bad": bad.port, "good": good.port}, max_fails=0)
        async with running_proxy(proxy_settings) as proxy:
            for _ in range(2):
                assert (await exchange(proxy.port, get())).body == b"ok"
            post = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx"
            statuses = {(await exchange(proxy.port, post)).status for _ in range(4)}
            assert statuses == {200, 503}
    finally:
        await bad.stop()
        await good.stop()


async def test_upstream_killed_mid_response_cuts_the_client() -> None:
    async def half(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.transport.abort()

    async with serving(half) as port, running_proxy(settings({"half": port})) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(get())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 OK")
        body = await asyncio.wait_for(reader.read(), 5)  # EOF: the proxy closed us
        writer.close()
        assert len(body) == 1000
        status = json.loads((await exchange(proxy.port, get("/_proxy/status.json"))).body)
        assert status["upstreams"][0]["failures"] == 1


async def test_chunked_and_close_delimited_responses() -> None:
    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\r\n"
                b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
            )

    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it")
        await writer.drain()

    async with serving(chunked) as port, running_proxy(settings({"c": port})) as proxy:
        response = await exchange(proxy.port, get())
        assert (response.body, response.headers["content-encoding"]) == (b"abcde", "gzip")
    async with serving(until_close) as port, running_proxy(settings({"c": port})) as proxy:
        response = await exchange(proxy.port, get())
        assert response.headers["transfer-encoding"] == "chunked"
        assert response.body == b"all of it"
        old = await exchange(proxy.port, b"GET / HTTP/1.0\r\n\r\n")
        assert old.body == b"all of it" and old.headers["connection"] == "close"


async def test_chunked_request_body_streams_to_upstream() -> None:
    upstream_bodies: list[bytes] = []

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        upstream_bodies.append(body)
        return web.Response(body=body[::-1])

    app = web.Application()
    app.router.add_post("/echo", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with running_proxy(settings({"app": port})) as proxy:
            request = (
                b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
            )
            response = await exchange(proxy.port, request)
            assert response.body == b"dlrow olleh"
            expect = (
                b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n"
                b"Expect: 100-continue\r\n\r\n"
            )
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(expect)
            interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(b"abcd")
            assert (await asyncio.wait_for(read_response(reader), 5)).body == b"dcba"
            writer.close()
    finally:
        await runner.cleanup()
    assert upstream_bodies == [b"hello world", b"abcd"]


async def test_websocket_echo_through_the_proxy() -> None:
    async def ws_echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            await ws.send_str("echo:" + message.data)
        return ws

    app = web.Application()
    app.router.add_get("/ws", ws_echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with (
            running_proxy(settings({"app": port})) as proxy,
            aiohttp.ClientSession() as session,
            session.ws_connect(
                f"http://127.0.0.1:{proxy.port}/ws", timeout=aiohttp.ClientWSTimeout(ws_close=5)
            ) as ws,
        ):
            for text in ("hello", "x" * 100_000):
                await ws.send_str(text)
                reply = await asyncio.wait_for(ws.receive(), 5)
                assert reply.data == "echo:" + text
    finally:
        await runner.cleanup()


async def test_upstream_rejoins_after_rise() -> None:
    upstream = await RawUpstream("ok").start()
    port = upstream.port
    proxy_settings = settings(
        {"app1": port}, health_interval=0.05, fall=2, rise=2, health_timeout=0.5, max_fails=0
    )
    try:
        async with running_proxy(proxy_settings) as proxy:
            await upstream.stop()
            await wait_for_state(proxy.port, "down")
            assert (await exchange(proxy.port, get())).status == 502
            await upstream.start(port)
            await wait_for_state(proxy.port, "up")
            assert (await exchange(proxy.port, get())).status == 200
            status = json.loads((await exchange(proxy.port, get("/_proxy/status.json"))).body)
    finally:
        await upstream.stop()
    texts = [event["text"] for event in status["health_log"]]
    assert texts[0].startswith("app1 DOWN ") and texts[0].endswith(
        "health check: connection refused"
    )
    assert texts[1].startswith("app1 UP ") and texts[1].endswith("2 health checks passed")


async def wait_for_state(port: int, state: str) -> None:
    for _ in range(100):
        status = json.loads((await exchange(port, get("/_proxy/status.json"))).body)
        if status["upstreams"][0]["state"] == state:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"upstream never became {state}")


async def test_status_page_metrics_and_unknown_status_path() -> None:
    upstream = await RawUpstream("ok").start()
    try:
        async with running_proxy(settings({"app1": upstream.port})) as proxy:
            await exchange(proxy.port, get())
            page = await exchange(proxy.port, get("/_proxy/status"))
            metrics = await exchange(proxy.port, get("/_proxy/metrics"))
            missing = await exchange(proxy.port, get("/_proxy/nothing"))
    finally:
        await upstream.stop()
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    assert b"/_proxy/status.json" in page.body and b"<svg" in page.body
    assert b"http://" not in page.body and b"https://" not in page.body  # no outside assets
    assert b'sessionha_proxy_upstream_requests_total{upstream="app1"} 1' in metrics.body
    assert missing.status == 404
    assert upstream.heads and all(b"_proxy" not in head for head in upstream.heads)
