"""Test-client helpers shared by the sessionstore tests: types, the manager, requests as a
given session."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient

from sessionstore import MANAGER_KEY, SessionManager
from sessionstore.client import MemcachedClient
from tests.support.memcached import MemcachedProcess

from .apps import make_app, settings_for

Client = TestClient[web.Request, web.Application]
ClientFactory = Callable[[web.Application], Awaitable[Client]]
Factory = Callable[..., MemcachedProcess]


def memcached_client(port: int, timeout: float = 0.5, pool_size: int = 2) -> MemcachedClient:
    """The choke point's client for node n1 on a loopback port."""
    return MemcachedClient(node="n1", host="127.0.0.1", port=port, operation_timeout=timeout,
                           pool_size=pool_size)


async def two_nodes(aiohttp_client: ClientFactory, memcached_factory: Factory,
                    **overrides: object) -> tuple[Client, MemcachedProcess, MemcachedProcess]:
    """A non-sticky app on two memcached nodes of its own (n1, n2)."""
    n1, n2 = memcached_factory(), memcached_factory()
    client = await aiohttp_client(make_app(settings_for(n1.address, n2.address,
                                                        sticky="false", **overrides)))
    return client, n1, n2


def manager_of(client: Client) -> SessionManager:
    return client.app[MANAGER_KEY]


async def get_as(client: Client, session_id: str, path: str,
                 params: dict[str, str] | None = None, method: str = "GET") -> ClientResponse:
    """A request carrying exactly this session cookie (the client's jar is emptied first)."""
    client.session.cookie_jar.clear()
    return await client.request(method, path, params=params,
                                headers={"Cookie": f"JSESSIONID={session_id}"})


async def new_session(client: Client, **attributes: str) -> str:
    """A new session holding `attributes` (set through the app's /put): its id."""
    client.session.cookie_jar.clear()
    response = await client.get("/put", params=attributes)
    assert response.status == 200
    return response.cookies["JSESSIONID"].value


async def crosswise_pair(aiohttp_client: ClientFactory, memcached_factory: Factory,
                         **app2_settings: object
                         ) -> tuple[MemcachedProcess, MemcachedProcess, Client, Client]:
    """Two hosts' memcached nodes n1, n2 and app servers app1, app2 assigned crosswise (app1
    backs up to n2, app2 to n1), `app2_settings` added to app2's."""
    n1, n2 = memcached_factory(), memcached_factory()
    app1 = await aiohttp_client(make_app(settings_for(
        n1.address, n2.address, jvm_route="app1", failover_nodes="n1")))
    app2 = await aiohttp_client(make_app(settings_for(
        n1.address, n2.address, jvm_route="app2", failover_nodes="n2", **app2_settings)))
    return n1, n2, app1, app2
