"""Test-client helpers shared by the sessionstore tests: types, the manager, requests as a
given session."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient

from sessionstore import MANAGER_KEY, SessionManager
from tests.support.memcached import MemcachedProcess

Client = TestClient[web.Request, web.Application]
ClientFactory = Callable[[web.Application], Awaitable[Client]]
Factory = Callable[..., MemcachedProcess]


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
