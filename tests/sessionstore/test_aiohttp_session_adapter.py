"""MemcachedHAStorage under aiohttp-session's own middleware, against real memcached: the
same ids, records and cookies as the native middleware, and the request's end always
finished (streamed answers stored, failed ones dropped)."""

from __future__ import annotations

import asyncio

import aiohttp_session
import pytest
from aiohttp import web

from sessionstore import SessionStoreSettings, build_manager
from sessionstore.aiohttp_session import MemcachedHAStorage
from sessionstore.ids import parse_session_id
from tests.support.memcached import MemcachedProcess

from .apps import Clock, settings_for
from .clients import Client, ClientFactory, Factory, get_as
from .stored import attributes_at, record_at

# aiohttp-session keeps its storage and session under plain str request keys; aiohttp 3.14
# warns once per key (and ignores the warning itself by default).
pytestmark = pytest.mark.filterwarnings("ignore::aiohttp.web.NotAppKeyWarning")


async def show(request: web.Request) -> web.Response:
    session = await aiohttp_session.get_session(request)
    return web.json_response({"id": session.identity, "new": session.new,
                              "attributes": dict(session)})


async def put(request: web.Request) -> web.Response:
    session = await aiohttp_session.get_session(request)
    for name, value in request.query.items():
        session[name] = value
    return await show(request)


async def fresh(request: web.Request) -> web.Response:
    old = await aiohttp_session.get_session(request)
    kept = dict(old)
    session = await aiohttp_session.new_session(request)
    session["was"] = kept
    return web.json_response({"id": session.identity, "new": session.new})


async def invalidate(request: web.Request) -> web.Response:
    session = await aiohttp_session.get_session(request)
    session.invalidate()
    return web.json_response({"after": dict(session)})  # reading does not start a new one


async def stream(request: web.Request) -> web.StreamResponse:
    session = await aiohttp_session.get_session(request)
    session["streamed"] = True
    response = web.StreamResponse()
    await response.prepare(request)
    await response.write(b"streamed")
    return response


async def fail(request: web.Request) -> web.Response:
    session = await aiohttp_session.get_session(request)
    session["half"] = "done"
    raise RuntimeError("the handler failed")


async def storage_client(aiohttp_client: ClientFactory, settings: SessionStoreSettings,
                         clock: Clock | None = None) -> Client:
    manager = build_manager(settings=settings, clock=clock) if clock is not None else None
    storage = MemcachedHAStorage(settings, manager=manager)
    app = web.Application()
    aiohttp_session.setup(app, storage)
    app.cleanup_ctx.append(storage.cleanup_ctx)
    for path, handler in (("/show", show), ("/put", put), ("/fresh", fresh),
                          ("/invalidate", invalidate), ("/stream", stream), ("/fail", fail)):
        app.router.add_get(path, handler)
        app.router.add_get(path + r"{params:;[^/]*}", handler)
    return await aiohttp_client(app)


async def stored(aiohttp_client: ClientFactory, settings: SessionStoreSettings) -> tuple[
        Client, str]:
    client = await storage_client(aiohttp_client, settings)
    response = await client.get("/put", params={"cart": "1"})
    return client, response.cookies["JSESSIONID"].value


async def test_same_ids_records_and_cookie_as_the_native_middleware(
        aiohttp_client: ClientFactory, memcached: MemcachedProcess) -> None:
    client = await storage_client(aiohttp_client, settings_for(
        memcached.address, session_cookie_domain="example.com", session_cookie_max_age=60))
    response = await client.get("/put", params={"cart": "1"})
    session_id = response.cookies["JSESSIONID"].value
    assert parse_session_id(session_id) is not None and session_id.endswith("-n1.app1")
    assert response.headers["Set-Cookie"] == (
        f"JSESSIONID={session_id}; Domain=example.com; HttpOnly; Max-Age=60; Path=/; "
        "SameSite=Lax")
    assert await attributes_at(memcached.port, session_id) == {"cart": "1"}
    body = await (await get_as(client, session_id, "/show")).json()
    assert body == {"id": session_id, "new": False, "attributes": {"cart": "1"}}


async def test_invalidate_deletes_the_copies_and_the_cookie(
        aiohttp_client: ClientFactory, memcached_factory: Factory) -> None:
    n1, n2 = memcached_factory(), memcached_factory()
    client, session_id = await stored(aiohttp_client, settings_for(
        n1.address, n2.address, sticky="false"))
    response = await get_as(client, session_id, "/invalidate")
    assert await response.json() == {"after": {}}
    assert response.cookies["JSESSIONID"]["max-age"] == "0"
    assert await record_at(n1.port, session_id) is None
    assert await record_at(n2.port, "bak:" + session_id) is None


async def test_new_session_is_empty_under_a_new_id_and_the_old_one_is_gone(
        aiohttp_client: ClientFactory, memcached: MemcachedProcess) -> None:
    client, old = await stored(aiohttp_client, settings_for(memcached.address))
    response = await get_as(client, old, "/fresh")
    new = response.cookies["JSESSIONID"].value
    assert (await response.json()) == {"id": new, "new": True} and new != old
    assert await record_at(memcached.port, old) is None
    assert await attributes_at(memcached.port, new) == {"was": {"cart": "1"}}
    body = await (await get_as(client, old, "/show")).json()
    assert body["id"] != old and body["attributes"] == {}


async def test_url_ids_follow_tracking_modes(
        aiohttp_client: ClientFactory, memcached: MemcachedProcess) -> None:
    for modes, adopted in (("cookie,url", True), ("cookie", False)):
        client, session_id = await stored(aiohttp_client, settings_for(
            memcached.address, tracking_modes=modes))
        client.session.cookie_jar.clear()
        body = await (await client.get(f"/show;jsessionid={session_id}")).json()
        assert (body["id"] == session_id) is adopted


@pytest.mark.parametrize("sticky", ["true", "false"])
async def test_what_aiohttp_session_does_not_save_is_not_saved_and_the_request_is_finished(
        aiohttp_client: ClientFactory, memcached_factory: Factory, sticky: str) -> None:
    n1, n2 = memcached_factory(), memcached_factory()
    client, session_id = await stored(aiohttp_client, settings_for(
        n1.address, n2.address, sticky=sticky, locking_mode="all" if sticky == "false"
        else "none", lock_timeout=1))
    assert await (await get_as(client, session_id, "/stream")).text() == "streamed"
    assert (await get_as(client, session_id, "/fail")).status == 500
    await asyncio.sleep(0.05)  # the end of a request's task runs just after its answer
    assert await record_at(n1.port, "lock:" + session_id) is None  # released
    assert await attributes_at(n1.port, session_id) == {"cart": "1"}
    body = await (await get_as(client, session_id, "/show")).json()
    assert body["attributes"] == {"cart": "1"}  # rolled back in memory too (sticky)


async def test_max_session_lifetime_holds_for_the_adapter(
        aiohttp_client: ClientFactory, memcached: MemcachedProcess) -> None:
    clock = Clock()
    client = await storage_client(aiohttp_client, settings_for(
        memcached.address, max_session_lifetime=100), clock)
    session_id = (await client.get("/put", params={"cart": "1"})).cookies["JSESSIONID"].value
    clock.advance(60)
    assert (await (await get_as(client, session_id, "/show")).json())["id"] == session_id
    clock.advance(60)
    body = await (await get_as(client, session_id, "/show")).json()
    assert body["id"] != session_id and body["new"] is True and body["attributes"] == {}
    assert await record_at(memcached.port, session_id) is None
