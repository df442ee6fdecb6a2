"""The demo's sign-in: POST /login rotates the session id (session fixation), stores `user`,
303 to /test; the page and the JSON view show the user; logout deletes the cookie. The last
test runs two `python -m appserver` processes and kills the one that signed the user in."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from appserver import create_app
from appserver.pages import DemoPage, SessionView
from tests.sessionstore.stored import attributes_at, record_at
from tests.support.memcached import MemcachedProcess

from .apps import AppClient, Client, settings_for
from .processes import AppServerProcess, exchange, request

JSON = {"Accept": "application/json"}
LOGIN_FORM = re.compile(r'<form class="login" method="POST" action="([^"]*)">')


async def view(client: Client, session_id: str | None = None, path: str = "/test") -> Any:
    headers = JSON | ({"Cookie": f"JSESSIONID={session_id}"} if session_id else {})
    client.session.cookie_jar.clear()
    async with client.get(path, headers=headers) as response:
        assert response.status == 200
        return await response.json()


async def sign_in(client: Client, session_id: str, name: str = "ada") -> str:
    """POST /login as the holder of `session_id`: the id the answer hands out."""
    client.session.cookie_jar.clear()
    async with client.post(
        "/login",
        data={"username": name},
        allow_redirects=False,
        headers={"Cookie": f"JSESSIONID={session_id}"},
    ) as response:
        assert response.status == 303 and response.headers["Location"] == "/test"
        return response.cookies["JSESSIONID"].value


async def test_sign_in_rotates_the_id_keeps_the_data_and_shows_the_user(
    app_client: AppClient, memcached: MemcachedProcess
) -> None:
    client = await app_client()
    before = await view(client, path="/test?dataName=cart&dataValue=2+books")
    assert before["user"] is None
    old = before["session_id"]
    new = await sign_in(client, old)
    assert new != old and new[32:] == old[32:]  # same node and route, new random part
    after = await view(client, new)
    assert after["session_id"] == new and after["user"] == "ada" and after["new"] is False
    assert after["attributes"] == {"cart": "2 books", "user": "ada"}
    assert await record_at(memcached.port, old) is None
    assert await attributes_at(memcached.port, new) == {"cart": "2 books", "user": "ada"}
    client.session.cookie_jar.clear()
    html = await (await client.get("/test", headers={"Cookie": f"JSESSIONID={new}"})).text()
    assert 'Signed in as <strong id="user">ada</strong>' in html
    assert LOGIN_FORM.search(html)[1] == "/login"  # type: ignore[index]


async def test_an_id_planted_before_sign_in_is_worthless_after_it(app_client: AppClient) -> None:
    client = await app_client()
    planted = (await view(client, path="/test?dataName=x&dataValue=1"))["session_id"]
    # The victim signs in with the attacker's id (a link, a cookie set by a sibling site).
    mine = await sign_in(client, planted, "victim")
    assert mine != planted
    for attacker in (view(client, planted), view(client, path=f"/test;jsessionid={planted}")):
        body = await attacker
        assert body["session_id"] not in (planted, mine)
        assert body["user"] is None and body["new"] is True and body["attributes"] == {}


async def test_sign_in_without_cookies_redirects_with_the_new_id_in_the_url(
    aiohttp_client: Callable[..., Awaitable[Client]], memcached: MemcachedProcess
) -> None:
    client = await aiohttp_client(
        create_app(settings_for(memcached)), cookie_jar=aiohttp.DummyCookieJar()
    )
    html = await (await client.get("/test?dataName=a&dataValue=1")).text()
    login = LOGIN_FORM.search(html)[1]  # type: ignore[index]
    old = login.removeprefix("/login;jsessionid=")
    assert login != old
    response = await client.post(login, data={"username": "bob"}, allow_redirects=False)
    assert response.status == 303
    location = response.headers["Location"]
    new = location.removeprefix("/test;jsessionid=")
    assert location != new and new != old
    body = await (await client.get(location, headers=JSON)).json()
    assert body["session_id"] == new and body["user"] == "bob"


async def test_a_bad_sign_in_is_a_4xx_and_changes_nothing(
    app_client: AppClient, memcached: MemcachedProcess
) -> None:
    client = await app_client()
    session_id = (await view(client, path="/test?dataName=a&dataValue=1"))["session_id"]
    for data, status in (({}, 400), ({"username": "  "}, 400), ({"username": "x" * 257}, 413)):
        client.session.cookie_jar.clear()
        async with client.post(
            "/login", data=data, headers={"Cookie": f"JSESSIONID={session_id}"}
        ) as response:
            assert response.status == status
            assert "username" in await response.text()
            assert "Set-Cookie" not in response.headers
    body = await view(client, session_id)
    assert body["session_id"] == session_id and body["user"] is None
    assert (await client.get("/login")).status == 405


async def test_logout_deletes_the_cookie_and_the_session(
    app_client: AppClient, memcached: MemcachedProcess
) -> None:
    client = await app_client()
    new = await sign_in(client, (await view(client))["session_id"])
    client.session.cookie_jar.clear()
    async with client.post(
        "/logout", allow_redirects=False, headers={"Cookie": f"JSESSIONID={new}"}
    ) as response:
        assert response.status == 303
        assert response.cookies["JSESSIONID"]["max-age"] == "0"
        assert response.cookies["JSESSIONID"]["path"] == "/"
    assert await record_at(memcached.port, new) is None
    assert (await view(client, new))["user"] is None


async def test_the_signed_in_session_survives_the_kill_of_the_server_that_rotated_it(
    appserver_process: Callable[..., AppServerProcess],
    memcached_factory: Callable[..., MemcachedProcess],
) -> None:
    n1, n2 = memcached_factory(), memcached_factory()
    app1 = appserver_process("app1", n1, n2, FAILOVER_NODES="n1")
    app2 = appserver_process("app2", n1, n2, FAILOVER_NODES="n2")
    first = await exchange(app1.port, request("/test?dataName=cart&dataValue=3", "login"))
    old = json.loads(first.body)["session_id"]
    body = b"username=ada"
    headers = {
        "Cookie": f"JSESSIONID={old}".encode(),
        "Content-Type": b"application/x-www-form-urlencoded",
    }
    signed = await exchange(
        app1.port, request("/login", "login", method="POST", headers=headers, body=body)
    )
    assert signed.status == 303
    found = re.search(rb"Set-Cookie: JSESSIONID=([^;]+)", signed.head)
    assert found is not None
    new = found[1].decode()

    async def as_(server: AppServerProcess, path: str, session_id: str | None = None) -> Any:
        cookie = {"Cookie": f"JSESSIONID={session_id}".encode()} if session_id else {}
        answer = await exchange(server.port, request(path, "check", headers=cookie))
        assert answer.status == 200
        return json.loads(answer.body)

    for server in (app1, app2):  # the old id is dead everywhere, by cookie and in the URL
        for stale in (
            await as_(server, "/test", old),
            await as_(server, f"/test;jsessionid={old}"),
        ):
            assert stale["session_id"] != old and stale["attributes"] == {}
    app1.process.kill()
    app1.process.wait(timeout=10)
    kept = await as_(app2, "/test", new)
    assert kept["server"] == "app2" and kept["session_id"].startswith(new[:32])
    assert kept["user"] == "ada" and kept["attributes"] == {"cart": "3", "user": "ada"}


def test_the_user_name_is_escaped_on_the_page_and_plain_in_the_json() -> None:
    page = DemoPage(route="app1", css_url="/s.css", logo_url="/l.png")
    hostile = '<script>alert("x")</script>'
    shown = SessionView(
        "127.0.0.1:1",
        "ID",
        False,
        0.0,
        0.0,
        1800.0,
        [("user", hostile)],
        "/test;jsessionid=ID",
        "/logout;jsessionid=ID",
        login_url="/login;jsessionid=ID",
        user=hostile,
    )
    html = page.html(shown)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert 'action="/login;jsessionid=ID"' in html
    assert json.loads(page.json(shown))["user"] == hostile
