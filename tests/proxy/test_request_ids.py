"""X-Request-ID: every request gets one (nginx's $request_id), the upstream is told it,
the client gets it back; an incoming one is kept only from a set_real_ip_from peer."""

from __future__ import annotations

import asyncio
import re

import pytest

from tests.proxy.support import (
    RawUpstream,
    exchange,
    get,
    read_response,
    running_proxy,
    settings,
)

ID = re.compile(rb"[0-9a-f]{24}")
POST = b"POST /form HTTP/1.1\r\nHost: example.test\r\nContent-Length: 3\r\n\r\na=b"


async def test_every_request_on_every_path_gets_its_own_id_both_ways() -> None:
    upstream = await RawUpstream("ok").start()
    try:
        async with running_proxy(settings({"app1": upstream.port})) as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            answers = []
            # The lean path twice on one connection, the parser path (a body), and the
            # fast path (a header the lean path leaves to the others).
            for request in (get("/a"), get("/a"), POST, get("/b", "Accept-Charset: x\r\n")):
                writer.write(request)
                answers.append(await asyncio.wait_for(read_response(reader), 5))
            writer.close()
    finally:
        await upstream.stop()
    returned = [answer.request_id for answer in answers]
    assert all(ID.fullmatch(request_id) for request_id in returned), returned
    assert len(set(returned)) == 4
    assert upstream.request_ids == returned  # the id the upstream saw is the client's


@pytest.mark.parametrize("trusted", [False, True], ids=["untrusted peer", "trusted peer"])
async def test_an_incoming_id_is_kept_only_from_a_trusted_peer(trusted: bool) -> None:
    upstream = await RawUpstream("ok").start()
    overrides = {"set_real_ip_from": "127.0.0.0/8"} if trusted else {}
    try:
        async with running_proxy(settings({"app1": upstream.port}, **overrides)) as proxy:
            answer = await exchange(proxy.port, get("/", "X-Request-ID: edge-42\r\n"))
            forged = await exchange(proxy.port, get("/", "X-Request-ID: has space\r\n"))
    finally:
        await upstream.stop()
    head = answer.raw_head
    if trusted:
        # Kept, forwarded once, returned; a malformed one is replaced even from a trusted peer.
        assert b"\r\nX-Request-ID: edge-42\r\n" in head and head.count(b"X-Request-ID") == 1
        assert upstream.heads[0].count(b"X-Request-ID: edge-42\r\n") == 1
        assert upstream.request_ids[0] == b""  # (not one of the proxy's own)
    else:
        assert b"edge-42" not in head and ID.fullmatch(answer.request_id)
        assert b"edge-42" not in upstream.heads[0]
        assert upstream.request_ids[0] == answer.request_id
    assert ID.fullmatch(forged.request_id) and b"has space" not in upstream.heads[1]


async def test_the_proxys_own_502_carries_the_request_id() -> None:
    async with running_proxy(settings({"gone": 1})) as proxy:
        answer = await exchange(proxy.port, get("/"))
    assert answer.status == 502 and ID.fullmatch(answer.request_id)
