"""The user's journey through the public API against one real memcached."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.test_utils import TestClient

from sessionstore import MANAGER_KEY
from tests.support.memcached import MemcachedProcess

from .apps import make_app, settings_for

Client = TestClient[web.Request, web.Application]


async def test_session_is_created_backed_up_and_kept(
        aiohttp_client: Callable[[web.Application], Awaitable[Client]],
        memcached: MemcachedProcess) -> None:
    client = await aiohttp_client(make_app(settings_for(memcached.address)))
    first = await client.get("/put", params={"name": "value"})
    assert first.status == 200
    cookie = first.cookies["JSESSIONID"]
    session_id = cookie.value
    assert session_id.endswith("-n1.app1")
    assert cookie["httponly"] and cookie["path"] == "/" and cookie["samesite"] == "Lax"

    second = await client.get("/show")
    body = await second.json()
    assert body == {"id": session_id, "new": False, "attributes": {"name": "value"},
                    "link": "/test?x=1"}
    assert "JSESSIONID" not in second.cookies
    stats = client.app[MANAGER_KEY].stats.snapshot()
    assert stats["sessions_created"] == 1
    assert stats["backups_written"] == 1
    assert stats["backups_skipped_unchanged"] == 1
