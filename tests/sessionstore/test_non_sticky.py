"""Non-sticky mode and locking (item 7) against real memcached processes."""

from __future__ import annotations

import asyncio

import pytest

from .clients import Client, ClientFactory, Factory, get_as, manager_of, two_nodes
from .stored import attributes_at, put, record_at, server_stat


async def test_both_copies_written_and_nothing_kept_in_memory(
        aiohttp_client: ClientFactory, memcached_factory: Factory) -> None:
    client, n1, n2 = await two_nodes(aiohttp_client, memcached_factory)
    response = await client.get("/put", params={"name": "value"})
    session_id = response.cookies["JSESSIONID"].value
    assert session_id.endswith("-n1.app1")
    assert await attributes_at(n1.port, session_id) == {"name": "value"}
    assert await attributes_at(n2.port, "bak:" + session_id) == {"name": "value"}
    assert manager_of(client).local_session_count == 0

    await put(n1.port, session_id, b"SH1 json 1.0 1.0 1800.0\n" + b'{"name":"changed"}')
    body = await (await get_as(client, session_id, "/show")).json()
    assert body["attributes"] == {"name": "changed"}  # read from memcached every request


async def test_falls_back_to_the_backup_copy_when_the_node_misses_or_dies(
        aiohttp_client: ClientFactory, memcached_factory: Factory) -> None:
    client, n1, n2 = await two_nodes(aiohttp_client, memcached_factory)
    session_id = (await client.get("/put", params={"name": "value"})).cookies["JSESSIONID"].value
    n1.restart()  # a miss on the primary copy
    await asyncio.sleep(0.05)
    body = await (await get_as(client, session_id, "/put", {"more": "1"})).json()
    assert body["id"] == session_id and body["attributes"] == {"name": "value", "more": "1"}
    assert await attributes_at(n1.port, session_id) == body["attributes"]  # restored

    n1.kill()  # the primary node dies: bak copy, relocation to n2, new id suffix
    response = await get_as(client, session_id, "/put", {"last": "2"})
    body = await response.json()
    moved = response.cookies["JSESSIONID"].value
    assert moved == session_id.replace("-n1.", "-n2.") == body["id"]
    assert body["attributes"] == {"name": "value", "more": "1", "last": "2"}
    assert await attributes_at(n2.port, moved) == body["attributes"]
    assert manager_of(client).stats.sessions_relocated == 1


async def test_unchanged_session_is_not_rewritten(
        aiohttp_client: ClientFactory, memcached_factory: Factory) -> None:
    client, n1, _ = await two_nodes(aiohttp_client, memcached_factory)
    session_id = (await client.get("/put", params={"name": "value"})).cookies["JSESSIONID"].value
    sets = await server_stat(n1.port, "cmd_set")
    await get_as(client, session_id, "/show")
    assert await server_stat(n1.port, "cmd_set") == sets
    assert manager_of(client).stats.backups_skipped_unchanged == 1


async def concurrent_increments(client: Client, session_id: str, count: int,
                                method: str = "GET") -> int:
    responses = await asyncio.gather(*(
        client.request(method, "/increment", headers={"Cookie": f"JSESSIONID={session_id}"})
        for _ in range(count)))
    assert {r.status for r in responses} == {200}
    body = await (await get_as(client, session_id, "/show")).json()
    count_value = body["attributes"]["count"]
    assert isinstance(count_value, int)
    return count_value


@pytest.mark.parametrize(("locking_mode", "method"), [
    ("all", "GET"), ("auto", "POST"), ("uriPattern:/incr.*", "GET")])
async def test_locking_serialises_concurrent_updates(
        aiohttp_client: ClientFactory, memcached_factory: Factory, locking_mode: str,
        method: str) -> None:
    client, n1, _ = await two_nodes(aiohttp_client, memcached_factory,
                                    locking_mode=locking_mode, lock_timeout=20)
    session_id = (await client.get("/put", params={"x": "1"})).cookies["JSESSIONID"].value
    client.session.cookie_jar.clear()
    assert await concurrent_increments(client, session_id, 50, method) == 50
    stats = manager_of(client).stats
    assert stats.lock_waits > 0 and stats.lock_timeouts == 0
    assert await record_at(n1.port, "lock:" + session_id) is None  # released


@pytest.mark.parametrize(("locking_mode", "method"), [
    ("none", "POST"), ("auto", "GET"), ("uriPattern:/other", "GET")])
async def test_without_locking_concurrent_updates_are_lost(
        aiohttp_client: ClientFactory, memcached_factory: Factory, locking_mode: str,
        method: str) -> None:
    client, _, _ = await two_nodes(aiohttp_client, memcached_factory,
                                   locking_mode=locking_mode)
    session_id = (await client.get("/put", params={"x": "1"})).cookies["JSESSIONID"].value
    client.session.cookie_jar.clear()
    assert await concurrent_increments(client, session_id, 50, method) < 50
    assert manager_of(client).stats.lock_waits == 0


async def test_lock_wait_beyond_lock_timeout_is_a_503(
        aiohttp_client: ClientFactory, memcached_factory: Factory) -> None:
    client, n1, _ = await two_nodes(aiohttp_client, memcached_factory, locking_mode="all",
                                    lock_timeout=0.2)
    session_id = (await client.get("/put", params={"x": "1"})).cookies["JSESSIONID"].value
    await put(n1.port, "lock:" + session_id, b"held elsewhere", 30)
    response = await get_as(client, session_id, "/increment")
    assert response.status == 503
    assert response.headers["Retry-After"] == "1"
    assert "is locked by another request" in await response.text()
    assert manager_of(client).stats.lock_timeouts == 1
    assert await attributes_at(n1.port, session_id) == {"x": "1"}  # untouched


async def test_invalidate_deletes_both_copies(
        aiohttp_client: ClientFactory, memcached_factory: Factory) -> None:
    client, n1, n2 = await two_nodes(aiohttp_client, memcached_factory, locking_mode="all")
    session_id = (await client.get("/put", params={"x": "1"})).cookies["JSESSIONID"].value
    await get_as(client, session_id, "/invalidate")
    assert await record_at(n1.port, session_id) is None
    assert await record_at(n2.port, "bak:" + session_id) is None
    assert await record_at(n1.port, "lock:" + session_id) is None
