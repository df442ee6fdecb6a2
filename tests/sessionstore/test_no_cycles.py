"""A request through sessionstore leaves nothing for the garbage collector: its objects are
freed by their reference counts when it ends. A cycle (the per-request state holding the
request that holds it) would leave every request to the collector, whose collections then
cost each request a few per cent of its CPU, and more as the heap grows."""

from __future__ import annotations

import gc
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.support.memcached import MemcachedProcess

from .apps import make_app, settings_for

Client = TestClient[web.Request, web.Application]
REQUESTS = 200


async def garbage_per_request(client: Client, path: str, cookies: dict[str, str]) -> float:
    """Objects the collector finds after REQUESTS requests, per request (collector off)."""
    for _ in range(5):  # warm: lazily made things (caches, the connection) are made now
        (await client.get(path, cookies=cookies)).release()
    gc.collect()
    gc.disable()
    try:
        for _ in range(REQUESTS):
            response = await client.get(path, cookies=cookies)
            assert response.status == 200
            await response.read()
        return gc.collect() / REQUESTS
    finally:
        gc.enable()


@pytest.mark.parametrize("sticky", [True, False], ids=["sticky", "non-sticky"])
async def test_requests_with_a_session_leave_no_cycles(
        aiohttp_client: Callable[[web.Application], Awaitable[Client]],
        memcached: MemcachedProcess, sticky: bool) -> None:
    async def untouched(_: web.Request) -> web.Response:
        return web.Response(text="no session")

    bare = web.Application()
    bare.router.add_get("/untouched", untouched)
    floor = await garbage_per_request(await aiohttp_client(bare), "/untouched", {})

    client = await aiohttp_client(make_app(settings_for(memcached.address, sticky=sticky)))
    first = await client.get("/put", params={"name": "value"})
    cookies = {"JSESSIONID": first.cookies["JSESSIONID"].value}
    with_session = await garbage_per_request(client, "/show", cookies)
    without = await garbage_per_request(client, "/untouched", cookies)
    # The test client's own per-request garbage is the floor; sessionstore adds none (one
    # cycle per request would add the request, its headers, its match info: dozens).
    assert with_session <= floor + 1, (with_session, floor)
    assert without <= floor + 1, (without, floor)

