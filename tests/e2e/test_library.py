"""sessionstore as a library in someone else's aiohttp app: the examples under examples/ as
real processes, and an app written only against aiohttp-session's API behind the proxy,
losing the server that served it; aiohttp-security's SessionIdentityPolicy on the adapter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp_security
import aiohttp_session
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from proxy.server import ProxyServer
from proxy.settings import settings_from_mapping
from sessionstore import SessionStoreSettings
from sessionstore.aiohttp_session import MemcachedHAStorage
from tests.sessionstore.stored import attributes_at, record_at
from tests.support.memcached import MemcachedProcess
from tests.support.ports import free_port, wait_for_port

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = aiohttp.ClientTimeout(total=10)
Example = Callable[..., tuple[subprocess.Popen[bytes], int]]


@pytest.fixture
def example(tmp_path: Path) -> Iterator[Example]:
    """example(script, route, *memcached, **env): `python examples/<script>` on a free port."""
    started: list[subprocess.Popen[bytes]] = []

    def start(
        script: str, route: str, *memcached: MemcachedProcess, **env: str
    ) -> tuple[subprocess.Popen[bytes], int]:
        port = free_port()
        nodes = ",".join(f"n{i}:{m.address}" for i, m in enumerate(memcached, start=1))
        variables = {
            "PATH": os.environ["PATH"],
            "PYTHONDONTWRITEBYTECODE": "1",
            "LISTEN": f"127.0.0.1:{port}",
            "JVM_ROUTE": route,
            "MEMCACHED_NODES": nodes,
        } | env
        with (tmp_path / f"{route}-{port}.log").open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, f"examples/{script}"],
                cwd=REPO,
                env=variables,
                stdout=log,
                stderr=log,
            )
        started.append(process)
        wait_for_port("127.0.0.1", port)
        return process, port

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def kill(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    process.wait(timeout=10)


async def test_the_native_example_counts_signs_in_under_a_new_id_and_signs_out(
    example: Example, memcached_factory: Callable[..., MemcachedProcess]
) -> None:
    n1 = memcached_factory()
    _, port = example("native.py", "app1", n1)
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession(
        timeout=TIMEOUT, cookie_jar=aiohttp.CookieJar(unsafe=True)
    ) as http:
        for visits in (1, 2):
            async with http.get(base + "/") as response:
                body = await response.json()
            assert body["visits"] == visits and body["user"] is None
        old = body["session_id"]
        async with http.post(base + "/login", data={"username": "ada"}) as response:
            body = await response.json()  # followed the 303 to /
        assert body["session_id"] != old and body["user"] == "ada" and body["visits"] == 3
        assert await record_at(n1.port, old) is None
        async with http.post(base + "/logout", allow_redirects=False) as response:
            assert response.cookies["JSESSIONID"]["max-age"] == "0"
        assert await record_at(n1.port, body["session_id"]) is None


@pytest.mark.parametrize("sticky", ["true", "false"])
async def test_an_aiohttp_session_app_behind_the_proxy_loses_its_server_and_no_data(
    example: Example, memcached_factory: Callable[..., MemcachedProcess], sticky: str
) -> None:
    n1, n2 = memcached_factory(), memcached_factory()
    crosswise = (
        ({"FAILOVER_NODES": "n1"}, {"FAILOVER_NODES": "n2"}) if sticky == "true" else ({}, {})
    )
    apps = {
        route: example("with_aiohttp_session.py", route, n1, n2, STICKY=sticky, **extra)
        for route, extra in zip(("app1", "app2"), crosswise, strict=True)
    }
    proxy_settings = settings_from_mapping(
        {
            "listen": "127.0.0.1:0",
            "upstreams": ",".join(f"{route}=127.0.0.1:{port}" for route, (_, port) in apps.items()),
            "policy": "sticky" if sticky == "true" else "round_robin",
            "health_interval": 0,
        }
    )
    async with (
        ProxyServer(proxy_settings) as proxy,
        aiohttp.ClientSession(timeout=TIMEOUT, cookie_jar=aiohttp.CookieJar(unsafe=True)) as http,
    ):
        base = f"http://127.0.0.1:{proxy.port}"
        for item in ("tea", "milk"):
            async with http.post(base + "/cart", data={"item": item}) as response:
                assert response.status == 200, await response.text()
        anonymous = (await (await http.get(base + "/")).json())["session_id"]
        async with http.post(base + "/login", data={"username": "ada"}) as response:
            signed_in = await response.json()
        assert signed_in["user"] == "ada" and signed_in["cart"] == ["tea", "milk"]
        session_id = signed_in["session_id"]
        assert session_id[:32] != anonymous[:32]
        node_of = {"n1": n1.port, "n2": n2.port}
        old_node, new_node = (
            node_of[i.rpartition("-")[2].partition(".")[0]] for i in (anonymous, session_id)
        )
        assert await record_at(old_node, anonymous) is None  # new_session ended the old one
        assert await attributes_at(new_node, session_id) == {"cart": ["tea", "milk"], "user": "ada"}
        victim = signed_in["server"]
        kill(apps[victim][0])
        for _ in range(3):
            async with http.get(base + "/") as response:
                after = await response.json()
            assert after["server"] != victim and after["new"] is False
            assert after["user"] == "ada" and after["cart"] == ["tea", "milk"]
            assert after["session_id"][:32] == session_id[:32]
        async with http.post(base + "/logout", allow_redirects=False) as response:
            assert response.cookies["JSESSIONID"]["max-age"] == "0"
        assert (await (await http.get(base + "/")).json())["user"] is None


class Accounts(aiohttp_security.AbstractAuthorizationPolicy):
    async def authorized_userid(self, identity: str) -> str | None:
        return identity if identity in ("ada", "bob") else None

    async def permits(self, identity: str | None, permission: Any, context: Any = None) -> bool:
        return identity == "ada" and permission == "admin"


def security_app(settings: SessionStoreSettings) -> web.Application:
    async def login(request: web.Request) -> web.Response:
        response = web.Response(text="signed in")
        await aiohttp_security.remember(request, response, request.query["user"])
        return response

    async def logout(request: web.Request) -> web.Response:
        response = web.Response(text="signed out")
        await aiohttp_security.forget(request, response)
        return response

    async def whoami(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "user": await aiohttp_security.authorized_userid(request),
                "admin": await aiohttp_security.permits(request, "admin"),
            }
        )

    app = web.Application()
    storage = MemcachedHAStorage(settings)
    aiohttp_session.setup(app, storage)
    app.cleanup_ctx.append(storage.cleanup_ctx)
    aiohttp_security.setup(app, aiohttp_security.SessionIdentityPolicy(), Accounts())
    app.router.add_get("/login", login)
    app.router.add_get("/logout", logout)
    app.router.add_get("/whoami", whoami)
    return app


# aiohttp-session keeps its storage and session under plain str request keys; aiohttp 3.14
# warns once per key (and ignores the warning itself by default).
@pytest.mark.filterwarnings("ignore::aiohttp.web.NotAppKeyWarning")
async def test_session_identity_policy_remembers_and_forgets_across_servers(
    aiohttp_client: Callable[..., Any], memcached_factory: Callable[..., MemcachedProcess]
) -> None:
    n1, n2 = memcached_factory(), memcached_factory()
    nodes = f"n1:{n1.address},n2:{n2.address}"
    clients: list[TestClient[web.Request, web.Application]] = [
        await aiohttp_client(
            security_app(
                SessionStoreSettings.from_mapping(
                    {"jvm_route": route, "memcached_nodes": nodes, "failover_nodes": failover}
                )
            )
        )
        for route, failover in (("app1", "n1"), ("app2", "n2"))
    ]
    app1, app2 = clients

    async def whoami(client: TestClient[web.Request, web.Application], session_id: str) -> Any:
        client.session.cookie_jar.clear()
        async with client.get("/whoami", headers={"Cookie": f"JSESSIONID={session_id}"}) as r:
            return await r.json()

    response = await app1.get("/login", params={"user": "ada"})
    session_id = response.cookies["JSESSIONID"].value
    assert session_id.endswith(".app1")
    assert await whoami(app1, session_id) == {"user": "ada", "admin": True}
    assert json.loads(json.dumps(await attributes_at(n2.port, session_id))) == {
        "AIOHTTP_SECURITY": "ada"
    }  # app1 backs up to the other host's node
    await app1.close()
    assert await whoami(app2, session_id) == {"user": "ada", "admin": True}  # failed over
    app2.session.cookie_jar.clear()
    taken_over = (
        (await app2.get("/whoami", headers={"Cookie": f"JSESSIONID={session_id}"}))
        .cookies["JSESSIONID"]
        .value
    )
    app2.session.cookie_jar.clear()
    await app2.get("/logout", headers={"Cookie": f"JSESSIONID={taken_over}"})
    assert await whoami(app2, taken_over) == {"user": None, "admin": False}
