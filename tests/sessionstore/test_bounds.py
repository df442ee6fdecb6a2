"""Bounds on sessions against real memcached: sessions in memory, data-less sessions, the
creation rate, coalesced and durable writes, evictions."""

from __future__ import annotations

import asyncio
import ipaddress
import logging

import pytest

from sessionstore import Session, SessionManager, build_manager
from sessionstore.backup_queue import Delete, Refresh, Write, joined
from sessionstore.codec import transcoder_named
from sessionstore.errors import SessionRateLimitError
from sessionstore.evictions import EVICTING_WINDOW, EvictionCounts
from sessionstore.ids import make_session_id
from tests.support.memcached import MemcachedProcess

from .apps import Clock, make_app, settings_for
from .clients import ClientFactory, Factory, crosswise_pair, get_as, manager_of, new_session
from .faulty_servers import DelayingProxy
from .stored import attributes_at, record_at, server_stat

CLIENT = ipaddress.ip_address("192.0.2.1")




async def test_the_least_recently_used_session_is_pushed_out_and_loads_back(
        aiohttp_client: ClientFactory, memcached: MemcachedProcess) -> None:
    clock = Clock()
    settings = settings_for(memcached.address, max_active_sessions=3)
    client = await aiohttp_client(make_app(settings, clock))
    manager = manager_of(client)
    ids = {}
    for name in "abc":
        ids[name] = await new_session(client, name=name)
        clock.advance(2)
    await get_as(client, ids["a"], "/show")  # a is used again: b is the least recently used
    clock.advance(2)
    ids["d"] = await new_session(client, name="d")
    assert manager.local_session_count == 3 and manager.stats.sessions_pushed_out == 1

    loaded = manager.stats.sessions_loaded
    for name in "acd":
        clock.advance(2)
        await get_as(client, ids[name], "/show")
    assert manager.stats.sessions_loaded == loaded  # all three still in memory
    response = await get_as(client, ids["b"], "/show")
    body = await response.json()
    assert body == {"id": ids["b"], "new": False, "attributes": {"name": "b"},
                    "link": "/test?x=1"}
    assert "JSESSIONID" not in response.cookies  # the same session, the same cookie
    assert manager.stats.sessions_loaded == loaded + 1
    assert manager.local_session_count == 3


async def test_sessions_memcached_does_not_hold_stay_and_new_ones_wait(
        aiohttp_client: ClientFactory, memcached: MemcachedProcess) -> None:
    client = await aiohttp_client(make_app(settings_for(memcached.address,
                                                        max_active_sessions=2)))
    memcached.kill()  # every change from now on lives in memory only
    first = await new_session(client, name="first")
    second = await new_session(client, name="second")
    client.session.cookie_jar.clear()
    response = await client.get("/show")
    assert response.status == 503 and response.headers["Retry-After"] == "1"
    assert "too many active sessions (2, max_active_sessions)" in await response.text()
    assert "JSESSIONID" not in response.cookies
    manager = manager_of(client)
    assert manager.stats.sessions_refused == 1 and manager.local_session_count == 2
    for session_id, name in ((first, "first"), (second, "second")):
        body = await (await get_as(client, session_id, "/show")).json()
        assert body["attributes"] == {"name": name}


async def test_a_session_without_data_never_reaches_memcached(
        aiohttp_client: ClientFactory, memcached: MemcachedProcess) -> None:
    clock = Clock()
    client = await aiohttp_client(make_app(settings_for(memcached.address), clock))
    body = await (await client.get("/show")).json()
    clock.advance(400)  # past the refresh point: still no touch for it
    assert (await (await client.get("/show")).json())["id"] == body["id"]
    await client.get("/invalidate")  # nothing to delete
    for command in ("cmd_get", "cmd_set", "cmd_touch", "delete_hits", "delete_misses"):
        assert await server_stat(memcached.port, command) == 0, command
    manager = manager_of(client)
    assert manager.stats.backups_skipped_empty == 2 and manager.local_session_count == 0

    session_id = await new_session(client, name="value")  # data: written at once
    assert await attributes_at(memcached.port, session_id) == {"name": "value"}


async def test_a_session_whose_data_is_removed_is_written_empty(
        memcached: MemcachedProcess) -> None:
    async with build_manager(settings=settings_for(memcached.address)) as manager:
        session, _ = await manager.open(None)
        session.active_requests += 1
        session["name"] = "value"
        assert await manager.finish(session, None, manager.plan_save(session, "/"))
        again, _ = await manager.open(session.id)
        again.active_requests += 1
        del again["name"]
        operation = manager.plan_save(again, "/")
        assert isinstance(operation, Write)
        assert await manager.finish(again, None, operation)
        assert await attributes_at(memcached.port, session.id) == {}


async def first_write(manager: SessionManager, address: str, **attributes: str) -> Session:
    """A request from `address` that makes a session and gives it data."""
    session, _ = await manager.open(None)
    session.active_requests += 1
    session.update(attributes)
    operation = manager.plan_save(session, "/", client=lambda: ipaddress.ip_address(address))
    assert await manager.finish(session, None, operation)
    return session


async def test_first_writes_of_new_sessions_follow_the_token_bucket(
        memcached: MemcachedProcess) -> None:
    clock = Clock()
    settings = settings_for(memcached.address, session_create_rate=1,
                            session_create_burst=2)
    async with build_manager(settings=settings, clock=clock) as manager:
        kept = [await first_write(manager, "192.0.2.1", n=str(n)) for n in range(2)]
        with pytest.raises(SessionRateLimitError) as caught:
            await first_write(manager, "192.0.2.1", n="2")
        assert str(caught.value) == "too many new sessions from 192.0.2.1; retry in 1.0s"
        assert caught.value.retry_after == pytest.approx(1.0)
        assert manager.local_session_count == 2  # the refused one is gone, never stored
        assert await server_stat(memcached.port, "curr_items") == 2

        await first_write(manager, "192.0.2.2", n="other client")
        for _ in range(5):  # data-less sessions and later writes are not counted
            session, _ = await manager.open(None)
            session.active_requests += 1
            assert manager.plan_save(session, "/", client=lambda: CLIENT) is None
        again, _ = await manager.open(kept[0].id)
        again.active_requests += 1
        again["more"] = "1"
        assert isinstance(manager.plan_save(again, "/", client=lambda: CLIENT), Write)
        clock.advance(1)
        await first_write(manager, "192.0.2.1", n="3")
        assert manager.stats.sessions_rate_limited == 1


async def test_over_the_rate_a_rotated_session_still_ends_and_nothing_new_is_stored(
        aiohttp_client: ClientFactory, memcached: MemcachedProcess) -> None:
    settings = settings_for(memcached.address, session_create_rate=0.001,
                            session_create_burst=1)
    client = await aiohttp_client(make_app(settings))
    session_id = await new_session(client, name="value")  # the one token
    response = await get_as(client, session_id, "/rotate")
    assert response.status == 429 and response.headers["Retry-After"] == "1000"
    assert "JSESSIONID" not in response.cookies
    assert await record_at(memcached.port, session_id) is None  # invalidated: deleted
    assert await server_stat(memcached.port, "curr_items") == 0


async def test_concurrent_changes_to_one_session_share_a_few_writes(
        aiohttp_client: ClientFactory, memcached: MemcachedProcess) -> None:
    with DelayingProxy(memcached.port) as network:
        client = await aiohttp_client(make_app(settings_for(network.address)))
        session_id = await new_session(client, start="1")
        network.reply_delay = 0.02  # one write at a time could not keep up: 50 x 20 ms
        manager = manager_of(client)
        written = manager.stats.backups_written
        responses = await asyncio.gather(*(
            get_as(client, session_id, "/put", {f"k{n}": str(n)}) for n in range(50)))
        assert [r.status for r in responses] == [200] * 50
        # Each answer was acknowledged by a write that started after its change: all there.
        stored = await attributes_at(memcached.port, session_id)
        assert stored == {"start": "1"} | {f"k{n}": str(n) for n in range(50)}
        assert manager.stats.backups_written - written <= 5
        assert manager.stats.backups_coalesced >= 45
        network.reply_delay = 0.0


async def test_an_invalidation_waits_for_the_write_in_flight(
        aiohttp_client: ClientFactory, memcached: MemcachedProcess) -> None:
    with DelayingProxy(memcached.port) as network:
        settings = settings_for(network.address, session_backup_async="true")
        client = await aiohttp_client(make_app(settings))
        network.reply_delay = 0.2
        session_id = await new_session(client, name="value")  # answered, write in flight
        await get_as(client, session_id, "/invalidate")
        await manager_of(client).flush(2.0)
        assert await record_at(memcached.port, session_id) is None  # no resurrection
        network.reply_delay = 0.0


async def test_an_empty_session_whose_server_died_gets_a_fresh_id_elsewhere(
        aiohttp_client: ClientFactory, memcached_factory: Factory) -> None:
    *_, app1, app2 = await crosswise_pair(aiohttp_client, memcached_factory)
    empty = (await (await app1.get("/show")).json())["id"]
    with_data = await new_session(app1, name="value")
    # app1 is gone for the client: app2 finds the one with data, never adopts the other.
    body = await (await get_as(app2, empty, "/show")).json()
    assert body["new"] is True and body["id"] != empty and body["id"].endswith(".app2")
    body = await (await get_as(app2, with_data, "/show")).json()
    assert body["new"] is False and body["attributes"] == {"name": "value"}


async def test_non_sticky_mode_keeps_nothing_in_memory(
        aiohttp_client: ClientFactory, memcached_factory: Factory) -> None:
    n1, n2 = memcached_factory(), memcached_factory()
    settings = settings_for(n1.address, n2.address, sticky="false", session_create_rate=0)
    client = await aiohttp_client(make_app(settings))
    session_id = await new_session(client, name="value")
    for number in range(100):
        await new_session(client, n=str(number))
        await get_as(client, session_id, "/put", {"k": str(number)})
    manager = manager_of(client)
    await manager.flush(1.0)
    assert manager.local_session_count == 0 and len(manager.queue) == 0


def test_operations_of_one_session_join_only_when_one_does_both() -> None:
    def session() -> Session:
        return Session(sid=make_session_id("A" * 32, "n1", "app1"),
                       transcoder=transcoder_named("json"), created=0.0, last_accessed=0.0,
                       max_inactive_interval=60.0, new=True)

    one, other = session(), session()
    first = Write(one, b"1", False)
    assert joined(first, Write(one, b"2", False)) == Write(one, b"2", False)  # the newest
    assert joined(first, Refresh(one, True)) == Write(one, b"1", True)  # a write refreshes
    assert joined(Refresh(one, False), first) == first
    assert joined(Refresh(one, False), Refresh(one, False)) == Refresh(one, False)
    assert joined(first, Write(other, b"2", False)) is None  # another request's own copy
    assert joined(first, Delete(one, False)) is None  # in order: written, then deleted
    assert joined(Delete(one, False), Write(one, b"2", False)) is None
    assert joined(Delete(one, False), Delete(one, False)) == Delete(one, False)


def test_eviction_counts_report_growth_once_and_survive_a_restart() -> None:
    counts = EvictionCounts()
    assert counts.observe("n1", 0, 100.0) == 0
    assert counts.status("n1", 100.0).evicting is False
    assert counts.observe("n1", 7, 110.0) == 7
    assert counts.observe("n1", 7, 120.0) == 0  # the same count again: no news
    assert counts.status("n1", 120.0).evictions == 7 and counts.evicting(120.0) == 1
    assert counts.observe("n1", 2, 130.0) == 0  # lower: memcached restarted, new baseline
    assert counts.observe("n1", 5, 140.0) == 3
    assert counts.status("n1", 140.0 + EVICTING_WINDOW).evicting is False
    assert counts.observe("n2", 4, 150.0) == 4  # evicted before we looked: lost all the same
    assert counts.status("n3", 150.0).evictions is None


async def flood(server: MemcachedProcess, size: int, evictions: int) -> None:
    """Other data of the same size straight into memcached until it has evicted `evictions`
    items."""
    value = b"f" * size
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        for batch in range(100):
            if await server_stat(server.port, "evictions") >= evictions:
                return
            for number in range(50):
                writer.write(b"set flood%d-%d 0 0 %d\r\n%s\r\n" % (batch, number, size, value))
            await writer.drain()
            for _ in range(50):
                assert await reader.readline() == b"STORED\r\n"
        raise AssertionError("memcached never evicted")
    finally:
        writer.close()
        await writer.wait_closed()


async def test_evictions_are_reported_once_and_lost_sessions_written_again(
        memcached_factory: Factory, caplog: pytest.LogCaptureFixture) -> None:
    small = memcached_factory(memory_mb=8)
    async with build_manager(settings=settings_for(small.address)) as manager:
        await manager.evictions.poll()  # the baseline: nothing evicted yet
        ids = []
        for number in range(10):
            session, _ = await manager.open(None)
            session.active_requests += 1
            session["data"] = f"{number}:" + "d" * 40_000
            assert await manager.finish(session, None, manager.plan_save(session, "/"))
            ids.append(session.id)
        await flood(small, 40_000, len(ids))
        assert [await record_at(small.port, i) for i in ids] == [None] * 10  # all evicted

        with caplog.at_level(logging.WARNING, logger="sessionstore"):
            await manager.evictions.poll()
            await manager.evictions.rechecks_done()
            await manager.evictions.poll()  # grown by the re-writes, or not at all
            await manager.evictions.rechecks_done()
            evicted = await server_stat(small.port, "evictions")
            await manager.evictions.poll()  # unchanged: says nothing
        warnings = [r.getMessage() for r in caplog.records if "evicted" in r.getMessage()]
        assert 1 <= len(warnings) <= 2 and warnings[0].startswith("memcached node n1 evicted")
        assert manager.node_evictions("n1").evictions == evicted
        assert manager.node_evictions("n1").evicting is True
        assert manager.stats.sessions_rewritten >= 10
        assert manager.stats.memcached_evictions == evicted
        assert manager.stats.snapshot()["nodes_evicting"] == 1
        for number, session_id in enumerate(ids):
            stored = await attributes_at(small.port, session_id)
            assert stored == {"data": f"{number}:" + "d" * 40_000}
