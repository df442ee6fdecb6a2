"""tracking_modes: with "cookie", ;jsessionid= is never read nor written."""

from __future__ import annotations

from tests.support.memcached import MemcachedProcess

from .apps import make_app, settings_for
from .clients import ClientFactory, new_session
from .stored import server_stat


async def test_cookie_only_ignores_a_valid_id_in_the_url_and_writes_none(
        aiohttp_client: ClientFactory, memcached: MemcachedProcess) -> None:
    client = await aiohttp_client(make_app(settings_for(memcached.address,
                                                        tracking_modes="cookie")))
    session_id = await new_session(client, cart="1")  # a real, stored session
    client.session.cookie_jar.clear()
    gets = await server_stat(memcached.port, "cmd_get")
    response = await client.get(f"/show;jsessionid={session_id}")
    body = await response.json()
    assert body["id"] != session_id and body["new"] is True and body["attributes"] == {}
    assert response.cookies["JSESSIONID"].value == body["id"]
    assert body["link"] == "/test?x=1"  # no ;jsessionid= in links, even without a cookie
    assert await server_stat(memcached.port, "cmd_get") == gets  # not even looked up


async def test_cookie_only_still_serves_the_cookie(
        aiohttp_client: ClientFactory, memcached: MemcachedProcess) -> None:
    client = await aiohttp_client(make_app(settings_for(memcached.address,
                                                        tracking_modes=" Cookie ")))
    session_id = await new_session(client, cart="1")
    body = await (await client.get("/show")).json()
    assert body["id"] == session_id and body["attributes"] == {"cart": "1"}


async def test_the_default_reads_and_writes_url_ids(
        aiohttp_client: ClientFactory, memcached: MemcachedProcess) -> None:
    client = await aiohttp_client(make_app(settings_for(memcached.address)))
    session_id = await new_session(client, cart="1")
    client.session.cookie_jar.clear()
    body = await (await client.get(f"/show;jsessionid={session_id}")).json()
    assert body["id"] == session_id and body["link"] == f"/test;jsessionid={session_id}?x=1"
