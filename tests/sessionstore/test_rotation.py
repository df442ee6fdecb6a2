"""Id rotation (Session.rotate_id, sessionstore.new_session) against real memcached: a new
random part, the same node and route, the data kept, the old id gone everywhere."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

import sessionstore
from sessionstore import SessionStoreError, get_session
from sessionstore.ids import parse_session_id
from tests.support.memcached import MemcachedProcess

from .apps import make_app, settings_for
from .clients import Client, ClientFactory, Factory, get_as, manager_of, new_session
from .stored import attributes_at, record_at


async def rotate(request: web.Request) -> web.Response:
    session = await get_session(request)
    old = session.id
    new = session.rotate_id()
    session["signed_in"] = True
    return web.json_response({"old": old, "new": new, "link": sessionstore.encode_url(
        request, "/show")})


async def rotate_slowly(request: web.Request) -> web.Response:
    session = await get_session(request)
    session.rotate_id()
    await asyncio.sleep(0.3)  # the old copy is still in memcached all this time
    return web.json_response({"id": session.id})


async def rotate_by_new_session(request: web.Request) -> web.Response:
    session = await sessionstore.new_session(request)
    return web.json_response({"id": session.id, "attributes": dict(session)})


async def rotate_invalidated(request: web.Request) -> web.Response:
    session = await get_session(request)
    session.invalidate()
    try:
        session.rotate_id()
    except SessionStoreError as exc:
        return web.Response(status=409, text=str(exc))
    return web.Response(text="rotated?!")


async def client_for(aiohttp_client: ClientFactory, settings: sessionstore.SessionStoreSettings
                     ) -> Client:
    app = make_app(settings)
    app.router.add_get("/rotate-id", rotate)
    app.router.add_get(r"/rotate-id{params:;[^/]*}", rotate)
    app.router.add_get("/new-session", rotate_by_new_session)
    app.router.add_get("/rotate-slowly", rotate_slowly)
    app.router.add_get("/rotate-invalidated", rotate_invalidated)
    return await aiohttp_client(app)


def same_but_random(old: str, new: str) -> bool:
    before, after = parse_session_id(old), parse_session_id(new)
    assert before is not None and after is not None
    return (before.node, before.route) == (after.node, after.route) \
        and before.random != after.random


async def unusable(client: Client, session_id: str) -> None:
    """Neither the cookie nor ;jsessionid= brings `session_id` back: a fresh session."""
    by_cookie = await (await get_as(client, session_id, "/show")).json()
    client.session.cookie_jar.clear()
    by_url = await (await client.get(f"/show;jsessionid={session_id}")).json()
    for body in (by_cookie, by_url):
        assert body["id"] != session_id and body["new"] is True and body["attributes"] == {}


async def test_sticky_rotation_keeps_the_data_under_a_new_id_and_deletes_the_old(
        aiohttp_client: ClientFactory, memcached_factory: Factory) -> None:
    n1 = memcached_factory()
    client = await client_for(aiohttp_client, settings_for(n1.address))
    old = await new_session(client, cart="2 books")
    response = await get_as(client, old, "/rotate-id")
    body = await response.json()
    new = response.cookies["JSESSIONID"].value
    assert body == {"old": old, "new": new, "link": "/show"}  # the cookie came: no URL id
    assert same_but_random(old, new)
    assert await record_at(n1.port, old) is None
    assert await attributes_at(n1.port, new) == {"cart": "2 books", "signed_in": True}
    assert manager_of(client).local_session_count == 1  # one session, under its new key
    kept = await (await get_as(client, new, "/show")).json()
    assert kept["id"] == new and kept["attributes"] == {"cart": "2 books", "signed_in": True}
    await unusable(client, old)


async def test_non_sticky_rotation_deletes_both_copies_of_the_old_id(
        aiohttp_client: ClientFactory, memcached_factory: Factory) -> None:
    n1, n2 = memcached_factory(), memcached_factory()
    client = await client_for(aiohttp_client, settings_for(
        n1.address, n2.address, sticky="false", locking_mode="all"))
    old = await new_session(client, cart="2 books")
    new = (await get_as(client, old, "/rotate-id")).cookies["JSESSIONID"].value
    assert same_but_random(old, new)
    for port, key in ((n1.port, old), (n2.port, "bak:" + old), (n1.port, "lock:" + old)):
        assert await record_at(port, key) is None, key
    assert await attributes_at(n1.port, new) == {"cart": "2 books", "signed_in": True}
    assert await attributes_at(n2.port, "bak:" + new) == {"cart": "2 books", "signed_in": True}
    await unusable(client, old)


async def test_a_client_without_cookies_follows_the_new_id_in_its_links(
        aiohttp_client: ClientFactory, memcached: MemcachedProcess) -> None:
    client = await client_for(aiohttp_client, settings_for(memcached.address))
    old = await new_session(client, cart="1")
    client.session.cookie_jar.clear()
    body = await (await client.get(f"/rotate-id;jsessionid={old}")).json()
    assert body["old"] == old and body["link"] == f"/show;jsessionid={body['new']}"
    await unusable(client, old)


async def test_new_session_is_rotation_with_the_data_kept(
        aiohttp_client: ClientFactory, memcached_factory: Factory) -> None:
    n1 = memcached_factory()
    client = await client_for(aiohttp_client, settings_for(n1.address))
    old = await new_session(client, cart="3")
    body = await (await get_as(client, old, "/new-session")).json()
    assert same_but_random(old, body["id"]) and body["attributes"] == {"cart": "3"}
    assert await record_at(n1.port, old) is None
    assert await attributes_at(n1.port, body["id"]) == {"cart": "3"}


async def test_a_new_session_without_data_rotates_without_touching_memcached(
        aiohttp_client: ClientFactory, memcached_factory: Factory) -> None:
    n1 = memcached_factory()
    client = await client_for(aiohttp_client, settings_for(n1.address))
    body = await (await client.get("/new-session")).json()
    assert body["attributes"] == {}
    assert manager_of(client).stats.backups_written == 0


async def test_an_invalidated_session_cannot_be_rotated(
        aiohttp_client: ClientFactory, memcached_factory: Factory) -> None:
    client = await client_for(aiohttp_client, settings_for(memcached_factory().address))
    response = await client.get("/rotate-invalidated")
    assert response.status == 409 and "invalidated" in await response.text()


@pytest.mark.parametrize("sticky", ["true", "false"])
async def test_the_rotated_id_survives_the_loss_of_the_server_that_made_it(
        aiohttp_client: ClientFactory, memcached_factory: Factory, sticky: str) -> None:
    n1, n2 = memcached_factory(), memcached_factory()
    crosswise = {"true": ({"failover_nodes": "n1"}, {"failover_nodes": "n2"}),
                 "false": ({}, {})}[sticky]
    app1 = await client_for(aiohttp_client, settings_for(
        n1.address, n2.address, jvm_route="app1", sticky=sticky, **crosswise[0]))
    app2 = await client_for(aiohttp_client, settings_for(
        n1.address, n2.address, jvm_route="app2", sticky=sticky, **crosswise[1]))
    old = await new_session(app1, cart="2 books")
    new = (await get_as(app1, old, "/rotate-id")).cookies["JSESSIONID"].value
    await app1.close()  # app1 and its memory are gone
    body = await (await get_as(app2, new, "/show")).json()
    assert body["attributes"] == {"cart": "2 books", "signed_in": True}
    assert body["id"].startswith(new[:32]) and body["new"] is False
    await unusable(app2, old)


async def test_a_request_racing_the_rotation_with_the_old_id_gets_a_fresh_session(
        aiohttp_client: ClientFactory, memcached: MemcachedProcess) -> None:
    client = await client_for(aiohttp_client, settings_for(memcached.address))
    old = await new_session(client, cart="1")
    client.session.cookie_jar.clear()
    cookie = {"Cookie": f"JSESSIONID={old}"}
    rotating = asyncio.ensure_future(client.get("/rotate-slowly", headers=cookie))
    await asyncio.sleep(0.1)  # rotated, not yet stored under the new id nor deleted
    assert await record_at(memcached.port, old) is not None
    racing = await (await client.get("/show", headers=cookie)).json()
    assert racing["id"] != old and racing["attributes"] == {}
    new = (await (await rotating).json())["id"]
    assert await record_at(memcached.port, old) is None
    assert await attributes_at(memcached.port, new) == {"cart": "1"}
