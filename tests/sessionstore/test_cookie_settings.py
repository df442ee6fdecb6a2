"""The session cookie's attributes from the settings, and the cookie deleted on invalidate."""

from __future__ import annotations

import pytest

from sessionstore import SettingsError
from tests.support.memcached import MemcachedProcess

from .apps import make_app, settings_for
from .clients import ClientFactory, Factory, get_as, new_session
from .stored import record_at

HTTPS = {"X-Forwarded-Proto": "https"}  # from 127.0.0.1, a trusted proxy by default


async def set_cookie(aiohttp_client: ClientFactory, memcached: MemcachedProcess,
                     headers: dict[str, str] | None = None, **settings: object) -> str:
    client = await aiohttp_client(make_app(settings_for(memcached.address, **settings)))
    response = await client.get("/show", headers=headers)
    assert response.status == 200
    value: str = response.headers["Set-Cookie"]
    return value.replace((await response.json())["id"], "ID")


async def test_the_defaults_are_the_cookie_sessionstore_always_sent(
        aiohttp_client: ClientFactory, memcached: MemcachedProcess) -> None:
    assert await set_cookie(aiohttp_client, memcached) == \
        "JSESSIONID=ID; HttpOnly; Path=/; SameSite=Lax"
    assert await set_cookie(aiohttp_client, memcached, HTTPS) == \
        "JSESSIONID=ID; HttpOnly; Path=/; SameSite=Lax; Secure"


async def test_every_cookie_setting_shows_in_set_cookie(
        aiohttp_client: ClientFactory, memcached: MemcachedProcess) -> None:
    header = await set_cookie(
        aiohttp_client, memcached, session_cookie_name="SID", session_cookie_path="/shop",
        session_cookie_domain="example.com", session_cookie_secure="always",
        session_cookie_same_site="strict", session_cookie_http_only="false",
        session_cookie_max_age="3600")
    assert header == "SID=ID; Domain=example.com; Max-Age=3600; Path=/shop; SameSite=Strict; Secure"


@pytest.mark.parametrize(("secure", "headers", "expected"), [
    ("never", HTTPS, False), ("always", None, True), ("auto", None, False), ("auto", HTTPS, True),
])
async def test_secure_follows_session_cookie_secure(
        aiohttp_client: ClientFactory, memcached: MemcachedProcess, secure: str,
        headers: dict[str, str] | None, expected: bool) -> None:
    header = await set_cookie(aiohttp_client, memcached, headers,
                              session_cookie_secure=secure)
    assert header.endswith("; Secure") is expected


async def test_same_site_none_forces_secure_and_contradicts_never(
        aiohttp_client: ClientFactory, memcached: MemcachedProcess) -> None:
    header = await set_cookie(aiohttp_client, memcached, session_cookie_same_site="None")
    assert header == "JSESSIONID=ID; HttpOnly; Path=/; SameSite=None; Secure"  # over http too
    with pytest.raises(SettingsError, match="session_cookie_secure"):
        settings_for(memcached.address, session_cookie_same_site="None",
                     session_cookie_secure="never")


@pytest.mark.parametrize(("key", "value"), [
    ("session_cookie_path", "shop"), ("session_cookie_path", "/a;b"),
    ("session_cookie_path", "/a b"), ("session_cookie_domain", "exa mple.com"),
    ("session_cookie_domain", "a;b"), ("session_cookie_secure", "sometimes"),
    ("session_cookie_same_site", "lenient"), ("session_cookie_http_only", "maybe"),
    ("session_cookie_max_age", "-1"), ("session_cookie_max_age", "forever"),
    ("tracking_modes", "url"), ("tracking_modes", "cookie,ssl"), ("tracking_modes", ""),
    ("max_session_lifetime", "-5"), ("max_session_lifetime", "nan"),
])
def test_bad_cookie_settings_name_the_key(key: str, value: str) -> None:
    with pytest.raises(SettingsError, match=key):
        settings_for("127.0.0.1:1", **{key: value})


async def test_invalidate_deletes_the_cookie_with_the_same_path_and_domain(
        aiohttp_client: ClientFactory, memcached: MemcachedProcess) -> None:
    client = await aiohttp_client(make_app(settings_for(
        memcached.address, session_cookie_path="/shop", session_cookie_domain="example.com")))
    session_id = await new_session(client, cart="1")
    response = await get_as(client, session_id, "/invalidate")
    assert response.headers.getall("Set-Cookie") == [
        "JSESSIONID=; Domain=example.com; Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; "
        "Max-Age=0; Path=/shop; SameSite=Lax"]
    assert await record_at(memcached.port, session_id) is None


async def test_invalidate_in_non_sticky_mode_deletes_the_cookie_and_both_copies(
        aiohttp_client: ClientFactory, memcached_factory: Factory) -> None:
    n1, n2 = memcached_factory(), memcached_factory()
    client = await aiohttp_client(make_app(settings_for(n1.address, n2.address,
                                                        sticky="false")))
    session_id = await new_session(client, cart="1")
    response = await get_as(client, session_id, "/invalidate")
    assert response.cookies["JSESSIONID"]["max-age"] == "0"
    assert response.cookies["JSESSIONID"].value == ""
    assert await record_at(n1.port, session_id) is None
    assert await record_at(n2.port, "bak:" + session_id) is None


async def test_a_session_started_anew_after_invalidate_gets_its_own_cookie_only(
        aiohttp_client: ClientFactory, memcached: MemcachedProcess) -> None:
    client = await aiohttp_client(make_app(settings_for(memcached.address)))
    session_id = await new_session(client, cart="1")
    response = await get_as(client, session_id, "/rotate")  # invalidate, then a new one
    cookies = response.headers.getall("Set-Cookie")
    assert len(cookies) == 1 and "Max-Age" not in cookies[0]
    assert response.cookies["JSESSIONID"].value == (await response.json())["id"] != session_id
