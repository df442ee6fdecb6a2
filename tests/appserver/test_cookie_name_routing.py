"""Proxy and app servers agree on the URL parameter for any session_cookie_name."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import aiohttp

from proxy.server import ProxyServer
from proxy.settings import settings_from_mapping
from tests.appserver.processes import AppServerProcess
from tests.support.memcached import MemcachedProcess

JSON = {"Accept": "application/json"}


async def test_url_rewritten_requests_stay_on_their_server_with_a_custom_cookie_name(
    appserver_process: Callable[..., AppServerProcess],
    memcached_factory: Callable[..., MemcachedProcess],
) -> None:
    n1 = memcached_factory()
    servers = {
        route: appserver_process(route, n1, SESSION_COOKIE_NAME="SID") for route in ("app1", "app2")
    }
    proxy_settings = settings_from_mapping(
        {
            "listen": "127.0.0.1:0",
            "upstreams": ",".join(f"{r}=127.0.0.1:{s.port}" for r, s in servers.items()),
            "policy": "sticky",
            "session_cookie_name": "SID",
            "health_interval": 0,
        }
    )
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        ProxyServer(proxy_settings) as proxy,
        aiohttp.ClientSession(timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()) as http,
    ):
        base = f"http://127.0.0.1:{proxy.port}"
        # A browser without cookies: the page's links carry the id as ;sid=ID.
        async with http.post(base + "/test", data={"dataName": "k", "dataValue": "v"}) as first:
            page = await first.text()
        links = set(re.findall(r'(?:action|href)="(/test;sid=[^"?#]+)', page))
        assert links, page
        link = links.pop()
        session_id = link.partition(";sid=")[2]
        owner = session_id.rpartition(".")[2]
        for _ in range(6):  # round robin would alternate; the route suffix pins the owner
            async with http.get(base + link, headers=JSON) as answer:
                body = json.loads(await answer.text())
            assert body["server"] == owner
            assert body["session_id"] == session_id
            assert body["attributes"] == {"k": "v"}
