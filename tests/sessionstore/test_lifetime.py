"""max_session_lifetime: a session older than that is invalidated on its next request,
however active it has been, on whichever server serves it (creation time is stored)."""

from __future__ import annotations

import pytest

from .apps import Clock, make_app, settings_for
from .clients import ClientFactory, Factory, get_as, manager_of, new_session
from .stored import record_at


@pytest.mark.parametrize("sticky", ["true", "false"])
async def test_an_active_session_ends_at_its_lifetime(
        aiohttp_client: ClientFactory, memcached_factory: Factory, sticky: str) -> None:
    n1, n2 = memcached_factory(), memcached_factory()
    clock = Clock()
    client = await aiohttp_client(make_app(settings_for(
        n1.address, n2.address, sticky=sticky, max_session_lifetime=100), clock))
    session_id = await new_session(client, cart="1")
    for _ in range(3):  # used every 30 s: never idle, yet 90 s old
        clock.advance(30)
        body = await (await get_as(client, session_id, "/show")).json()
        assert body["id"] == session_id and body["attributes"] == {"cart": "1"}
    clock.advance(11)
    response = await get_as(client, session_id, "/show")
    body = await response.json()
    assert body["id"] != session_id and body["new"] is True and body["attributes"] == {}
    assert response.cookies["JSESSIONID"].value == body["id"]
    assert await record_at(n1.port, session_id) is None
    assert await record_at(n2.port, "bak:" + session_id) is None
    assert manager_of(client).stats.sessions_invalidated == 1


async def test_the_lifetime_holds_on_the_server_that_takes_over(
        aiohttp_client: ClientFactory, memcached_factory: Factory) -> None:
    n1, n2 = memcached_factory(), memcached_factory()
    clock = Clock()
    app1 = await aiohttp_client(make_app(settings_for(
        n1.address, n2.address, jvm_route="app1", failover_nodes="n1",
        max_session_lifetime=100), clock))
    app2 = await aiohttp_client(make_app(settings_for(
        n1.address, n2.address, jvm_route="app2", failover_nodes="n2",
        max_session_lifetime=100), clock))
    session_id = await new_session(app1, cart="1")
    clock.advance(60)
    taken = await (await get_as(app2, session_id, "/show")).json()  # app1 seemed down
    assert taken["attributes"] == {"cart": "1"}
    clock.advance(50)  # 110 s since app1 created it: app2 knows, from the stored record
    body = await (await get_as(app2, taken["id"], "/show")).json()
    assert body["new"] is True and body["attributes"] == {}


async def test_zero_means_no_lifetime(
        aiohttp_client: ClientFactory, memcached_factory: Factory) -> None:
    clock = Clock()
    client = await aiohttp_client(make_app(settings_for(memcached_factory().address), clock))
    session_id = await new_session(client, cart="1")
    for _ in range(5):
        clock.advance(1000)  # within max_inactive_interval each time
        body = await (await get_as(client, session_id, "/show")).json()
        assert body["id"] == session_id
