"""Non-sticky mode's round trips (issue 17): what each request costs memcached, and that the
copies still expire, and still survive the loss of the primary node, when reads only touch.

Counted with the memcached servers' own `stats`: `cmd_get` counts meta gets (`mg`) too,
`cmd_set` every storage command, `cmd_touch` touches.
"""

from __future__ import annotations

import asyncio

from tests.support.memcached import MemcachedProcess

from .clients import ClientFactory, Factory, get_as, manager_of, new_session, two_nodes
from .stored import attributes_at, put, raw_at, record_at, server_stat, ttl

_COMMANDS = ("cmd_get", "cmd_set", "cmd_touch", "delete_hits", "delete_misses")


async def counts(*nodes: MemcachedProcess) -> list[dict[str, int]]:
    return [{name: await server_stat(node.port, name) for name in _COMMANDS}
            for node in nodes]


def grown(after: list[dict[str, int]], before: list[dict[str, int]]) -> list[dict[str, int]]:
    return [{name: a[name] - b[name] for name in _COMMANDS if a[name] != b[name]}
            for a, b in zip(after, before, strict=True)]


async def test_a_read_only_request_is_one_meta_get_and_nothing_else(
        aiohttp_client: ClientFactory, memcached_factory: Factory) -> None:
    client, n1, n2 = await two_nodes(aiohttp_client, memcached_factory)
    session_id = await new_session(client, name="value")
    before = await counts(n1, n2)
    for _ in range(3):
        body = await (await get_as(client, session_id, "/show")).json()
        assert body["attributes"] == {"name": "value"}
    assert grown(await counts(n1, n2), before) == [{"cmd_get": 3}, {}]


async def test_a_change_writes_both_copies_after_one_get(
        aiohttp_client: ClientFactory, memcached_factory: Factory) -> None:
    client, n1, n2 = await two_nodes(aiohttp_client, memcached_factory)
    session_id = await new_session(client, name="value")
    before = await counts(n1, n2)
    await get_as(client, session_id, "/put", {"more": "1"})
    assert grown(await counts(n1, n2), before) == [{"cmd_get": 1, "cmd_set": 1},
                                                   {"cmd_set": 1}]
    for port, key in ((n1.port, session_id), (n2.port, "bak:" + session_id)):
        assert await attributes_at(port, key) == {"name": "value", "more": "1"}


async def test_a_due_refresh_touches_both_copies_at_once_without_rewriting(
        aiohttp_client: ClientFactory, memcached_factory: Factory) -> None:
    client, n1, n2 = await two_nodes(aiohttp_client, memcached_factory)
    session_id = await new_session(client, name="value")
    # Both copies written (or touched) long ago: 50 s left of their 1980 s.
    for port, key in ((n1.port, session_id), (n2.port, "bak:" + session_id)):
        await put(port, key, await raw_at(port, key), 50)
    before = await counts(n1, n2)
    await get_as(client, session_id, "/show")
    await manager_of(client).flush()
    assert grown(await counts(n1, n2), before) == [{"cmd_get": 1, "cmd_touch": 1},
                                                   {"cmd_touch": 1}]
    assert await ttl(n1.port, session_id) > 1800
    assert await ttl(n2.port, "bak:" + session_id) > 1800
    assert manager_of(client).stats.backups_refreshed == 1

    before = await counts(n1, n2)  # just refreshed: the next read is a get again
    await get_as(client, session_id, "/show")
    assert grown(await counts(n1, n2), before) == [{"cmd_get": 1}, {}]


async def test_a_lost_backup_copy_is_written_again_when_refreshed(
        aiohttp_client: ClientFactory, memcached_factory: Factory) -> None:
    client, n1, n2 = await two_nodes(aiohttp_client, memcached_factory)
    session_id = await new_session(client, name="value")
    await put(n1.port, session_id, await raw_at(n1.port, session_id), 50)
    n2.restart()  # the `bak:` copy is gone
    await asyncio.sleep(0.05)
    await get_as(client, session_id, "/show")
    await manager_of(client).flush()
    assert await attributes_at(n2.port, "bak:" + session_id) == {"name": "value"}
    assert manager_of(client).stats.sessions_rewritten == 1


async def test_a_read_from_the_backup_copy_restores_the_primary_one(
        aiohttp_client: ClientFactory, memcached_factory: Factory) -> None:
    client, n1, n2 = await two_nodes(aiohttp_client, memcached_factory)
    session_id = await new_session(client, name="value")
    n1.restart()  # the primary copy is gone, its node is fine
    await asyncio.sleep(0.05)
    body = await (await get_as(client, session_id, "/show")).json()
    assert body["id"] == session_id and body["attributes"] == {"name": "value"}
    assert await attributes_at(n1.port, session_id) == {"name": "value"}
    before = await counts(n1, n2)
    await get_as(client, session_id, "/show")
    assert grown(await counts(n1, n2), before) == [{"cmd_get": 1}, {}]  # primary hit again


async def test_both_copies_expire_after_the_interval_without_requests(
        aiohttp_client: ClientFactory, memcached_factory: Factory) -> None:
    client, n1, n2 = await two_nodes(aiohttp_client, memcached_factory,
                                     max_inactive_interval=1)
    session_id = await new_session(client, name="value")
    assert 0 < await ttl(n1.port, session_id) <= 2  # the interval plus a tenth, rounded up
    assert 0 < await ttl(n2.port, "bak:" + session_id) <= 2
    await asyncio.sleep(3.1)  # memcached's clock ticks in whole seconds
    assert await record_at(n1.port, session_id) is None
    assert await record_at(n2.port, "bak:" + session_id) is None
    body = await (await get_as(client, session_id, "/show")).json()
    assert body["new"] is True and body["id"] != session_id and body["attributes"] == {}


async def test_read_only_requests_keep_the_backup_alive_until_the_primary_node_dies(
        aiohttp_client: ClientFactory, memcached_factory: Factory) -> None:
    """Reads only (no change, so no write) for longer than a copy lives: the touches keep
    both copies, and after the primary node is killed the `bak:` copy serves the session."""
    client, n1, n2 = await two_nodes(aiohttp_client, memcached_factory,
                                     max_inactive_interval=2)  # copies live 3 s untouched
    session_id = await new_session(client, name="value")
    sets = await server_stat(n2.port, "cmd_set")
    for _ in range(12):  # 6 s of reads, twice as long as an untouched copy lives
        body = await (await get_as(client, session_id, "/show")).json()
        assert body["id"] == session_id and body["attributes"] == {"name": "value"}
        await manager_of(client).flush()
        await asyncio.sleep(0.5)
    assert await server_stat(n2.port, "cmd_set") == sets  # touched, never rewritten
    assert await server_stat(n2.port, "cmd_touch") > 0
    n1.kill()
    response = await get_as(client, session_id, "/show")
    body = await response.json()
    assert body["attributes"] == {"name": "value"} and body["new"] is False
    assert body["id"] == session_id.replace("-n1.", "-n2.")
    assert manager_of(client).stats.relocations == {"n1": {"n2": 1}}
