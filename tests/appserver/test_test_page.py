"""The /test page journey: render, accumulate, JSON, cookies off, escaping, logout, take-over."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from appserver import create_app
from tests.support.memcached import MemcachedProcess

from .apps import AppClient, Client, settings_for

JSON = {"Accept": "application/json"}
ACTION = re.compile(r'<form class="add" method="POST" action="([^"]*)">')


async def as_json(client: Client, path: str = "/test", **kwargs: Any) -> dict[str, Any]:
    method = "POST" if "data" in kwargs else "GET"
    async with client.request(method, path, headers=JSON, **kwargs) as response:
        assert response.status == 200, await response.text()
        assert response.content_type == "application/json"
        return dict(await response.json())


async def test_the_page_renders_with_a_new_session(app_client: AppClient) -> None:
    client = await app_client()
    response = await client.get("/test")
    assert response.status == 200
    assert response.content_type == "text/html" and response.charset == "utf-8"
    html = await response.text()
    session_id = response.cookies["JSESSIONID"].value
    assert session_id.endswith(".app1")
    assert response.cookies["JSESSIONID"]["httponly"]
    logout = f'action="/logout;jsessionid={session_id}"'
    for text in (
        "Server Info:",
        f"127.0.0.1:{client.port}",
        session_id,
        "Session Data:",
        'name="dataName"',
        'name="dataValue"',
        logout,
    ):
        assert text in html
    # No cookie came with the first request, so links carry the id, as Tomcat's encodeURL does;
    # once the cookie comes back they are plain.
    assert ACTION.search(html)[1] == f"/test;jsessionid={session_id}"  # type: ignore[index]
    html = await (await client.get("/test")).text()
    assert ACTION.search(html)[1] == "/test"  # type: ignore[index]
    assert 'action="/logout"' in html


async def test_entries_accumulate_across_requests_in_the_order_first_set(
    app_client: AppClient,
) -> None:
    client = await app_client()
    first = await as_json(client, data={"dataName": "fruit", "dataValue": "apple"})
    assert first["new"] is True
    await as_json(client, params={"dataName": "colour", "dataValue": "green"})
    await as_json(client, data={"dataName": "fruit", "dataValue": "pear"})  # replaced in place
    last = await as_json(client)
    assert last["new"] is False and last["session_id"] == first["session_id"]
    assert list(last["attributes"].items()) == [("fruit", "pear"), ("colour", "green")]
    html = await (await client.get("/test.jsp")).text()
    assert html.index("fruit = pear") < html.index("colour = green")


async def test_the_json_view_is_the_documented_object(app_client: AppClient) -> None:
    client = await app_client()
    body = await as_json(client, "/test.jsp", data={"dataName": "k", "dataValue": "v"})
    assert body == {
        "server": "app1",
        "address": f"127.0.0.1:{client.port}",
        "session_id": body["session_id"],
        "new": True,
        "user": None,
        "attributes": {"k": "v"},
    }


async def test_empty_data_name_is_ignored_and_a_missing_value_removes(
    app_client: AppClient,
) -> None:
    client = await app_client()
    await as_json(client, data={"dataName": "a", "dataValue": "1"})
    assert (await as_json(client, data={"dataName": "", "dataValue": "x"}))["attributes"] == {
        "a": "1"
    }
    assert (await as_json(client, data={"dataName": "a"}))["attributes"] == {}


async def test_cookies_disabled_round_trip_through_url_rewriting(
    aiohttp_client: Callable[..., Awaitable[Client]], memcached: MemcachedProcess
) -> None:
    client = await aiohttp_client(
        create_app(settings_for(memcached)), cookie_jar=aiohttp.DummyCookieJar()
    )
    html = await (await client.get("/test")).text()
    action = ACTION.search(html)[1]  # type: ignore[index]
    session_id = action.removeprefix("/test;jsessionid=")
    assert action != session_id and session_id.endswith(".app1")
    assert f'action="/logout;jsessionid={session_id}"' in html

    response = await client.post(action, data={"dataName": "basket", "dataValue": "3 eggs"})
    html = await response.text()
    assert "basket = 3 eggs" in html and session_id in html
    body = await as_json(client, action, params={"dataName": "more", "dataValue": "milk"})
    assert body["session_id"] == session_id and body["new"] is False
    assert body["attributes"] == {"basket": "3 eggs", "more": "milk"}
    # without the path parameter the cookie-less client is a stranger again
    assert (await as_json(client))["session_id"] != session_id


async def test_html_and_script_in_names_and_values_are_escaped(app_client: AppClient) -> None:
    client = await app_client()
    name, value = "<script>alert('n')</script>", '"><img src=x onerror=alert(1)>'
    response = await client.post("/test", data={"dataName": name, "dataValue": value})
    html = await response.text()
    assert "<script>" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(&#x27;n&#x27;)&lt;/script&gt; = &quot;&gt;&lt;img" in html
    assert (await as_json(client))["attributes"] == {name: value}  # stored as typed


async def test_logout_invalidates_the_session(app_client: AppClient) -> None:
    client = await app_client()
    before = await as_json(client, data={"dataName": "a", "dataValue": "1"})
    response = await client.post("/logout", allow_redirects=False)
    assert response.status == 303 and response.headers["Location"] == "/test"
    after = await as_json(client)
    assert after["new"] is True and after["attributes"] == {}
    assert after["session_id"] != before["session_id"]


async def test_take_over_app1_stopped_app2_serves_the_same_cookie(
    aiohttp_client: Callable[..., Awaitable[Client]],
    memcached_factory: Callable[..., MemcachedProcess],
) -> None:
    n1, n2 = memcached_factory(), memcached_factory()
    app1 = await aiohttp_client(create_app(settings_for(n1, n2, route="app1", failover_nodes="n1")))
    written = await as_json(app1, data={"dataName": "cart", "dataValue": "2 books"})
    await as_json(app1, data={"dataName": "user", "dataValue": "ada"})
    cookie = written["session_id"]
    await app1.close()  # app1 is gone: its memory with it

    app2 = await aiohttp_client(create_app(settings_for(n1, n2, route="app2", failover_nodes="n2")))
    async with app2.get("/test", headers=JSON | {"Cookie": f"JSESSIONID={cookie}"}) as response:
        body = await response.json()
        assert body["server"] == "app2"
        assert body["attributes"] == {"cart": "2 books", "user": "ada"}
        assert body["session_id"].split("-")[0] == cookie.split("-")[0]  # same session
        assert body["session_id"].endswith(".app2")  # now owned by app2: re-suffixed
        assert response.cookies["JSESSIONID"].value == body["session_id"]
