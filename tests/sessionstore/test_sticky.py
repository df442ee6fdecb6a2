"""Sticky mode (items 3-6, 8, 9, 12) against real memcached processes."""

from __future__ import annotations

import asyncio
import time

import pytest

from sessionstore import build_manager
from tests.support.memcached import MemcachedProcess

from .apps import Clock, make_app, settings_for
from .clients import ClientFactory, Factory, crosswise_pair, get_as, manager_of, new_session
from .faulty_servers import DelayingProxy, SilentServer
from .stored import attributes_at, put, raw_at, record_at, server_stat, ttl


def cookie(session_id: str) -> dict[str, str]:
    return {"Cookie": f"JSESSIONID={session_id}"}


async def test_backup_after_change_and_digest_skip_when_unchanged(
        aiohttp_client: ClientFactory, memcached: MemcachedProcess) -> None:
    client = await aiohttp_client(make_app(settings_for(memcached.address)))
    session_id = await new_session(client, name="value")
    assert await attributes_at(memcached.port, session_id) == {"name": "value"}
    assert await ttl(memcached.port, session_id) > 1800  # max_inactive_interval + slack
    sets_before = await server_stat(memcached.port, "cmd_set")

    await client.get("/show")
    await client.get("/put", params={"name": "value"})  # same value: same digest
    assert await server_stat(memcached.port, "cmd_set") == sets_before
    stats = manager_of(client).stats.snapshot()
    assert stats["backups_skipped_unchanged"] == 2 and stats["backups_written"] == 1

    await client.get("/append", params={"item": "a"})  # in-place change of a list value
    await client.get("/append", params={"item": "b"})
    assert await attributes_at(memcached.port, session_id) == {
        "name": "value", "items": ["a", "b"]}
    assert await server_stat(memcached.port, "cmd_set") == sets_before + 2


async def test_request_without_get_session_touches_nothing(
        aiohttp_client: ClientFactory, memcached: MemcachedProcess) -> None:
    client = await aiohttp_client(make_app(settings_for(memcached.address)))
    gets = await server_stat(memcached.port, "cmd_get")
    response = await client.get("/untouched")
    assert response.status == 200 and "JSESSIONID" not in response.cookies
    assert await server_stat(memcached.port, "cmd_get") == gets
    assert await server_stat(memcached.port, "cmd_set") == 0


async def test_expiry_refreshed_with_touch_only_after_a_tenth_of_the_interval(
        aiohttp_client: ClientFactory, memcached: MemcachedProcess) -> None:
    clock = Clock()
    client = await aiohttp_client(make_app(settings_for(memcached.address), clock))
    session_id = await new_session(client, name="value")
    await put(memcached.port, session_id, await raw_at(memcached.port, session_id), 50)
    assert await ttl(memcached.port, session_id) <= 50

    clock.advance(100)  # < 10 % of 1800 s: no memcached round trip at all
    await client.get("/show")
    assert await ttl(memcached.port, session_id) <= 50
    clock.advance(100)  # 200 s since the write: refresh with touch, not a rewrite
    sets = await server_stat(memcached.port, "cmd_set")
    await client.get("/show")
    assert await ttl(memcached.port, session_id) > 1800
    assert await server_stat(memcached.port, "cmd_touch") == 1
    assert await server_stat(memcached.port, "cmd_set") == sets
    assert manager_of(client).stats.backups_refreshed == 1


async def test_touch_of_a_lost_copy_writes_it_again(
        aiohttp_client: ClientFactory, memcached: MemcachedProcess) -> None:
    clock = Clock()
    client = await aiohttp_client(make_app(settings_for(memcached.address), clock))
    session_id = await new_session(client, name="value")
    memcached.restart()  # empty again, as after a reboot
    await asyncio.sleep(0.05)  # the loop sees the old connections close (the pool drops them)
    clock.advance(400)
    await client.get("/show")
    assert await attributes_at(memcached.port, session_id) == {"name": "value"}
    assert manager_of(client).stats.backups_written == 2


async def test_local_sessions_expire_after_max_inactive_interval(
        aiohttp_client: ClientFactory, memcached: MemcachedProcess) -> None:
    clock = Clock()
    settings = settings_for(memcached.address, max_inactive_interval=600)
    client = await aiohttp_client(make_app(settings, clock))
    kept = await new_session(client, name="kept")
    expired = await new_session(client, name="old")
    clock.advance(500)
    await get_as(client, kept, "/show")
    clock.advance(101)  # `expired` idle 601 s, `kept` 101 s
    response = await get_as(client, expired, "/show")
    body = await response.json()
    assert body["id"] != expired and body["attributes"] == {} and body["new"] is True
    manager = manager_of(client)
    await manager.flush(1.0)
    assert await record_at(memcached.port, expired) is None  # deleted from memcached too
    assert manager.stats.sessions_expired == 1

    clock.advance(601)
    assert manager.expire_idle_sessions() == 2  # `kept` and the session made just now
    assert manager.local_session_count == 0
    await manager.flush(1.0)
    assert await record_at(memcached.port, kept) is None


async def test_new_sessions_spread_evenly_over_n_nodes(
        aiohttp_client: ClientFactory, memcached_factory: Factory) -> None:
    servers = [memcached_factory() for _ in range(4)]
    settings = settings_for(*(s.address for s in servers), failover_nodes="n4")
    client = await aiohttp_client(make_app(settings))
    nodes = []
    for _ in range(30):
        nodes.append((await new_session(client, a="1")).split("-")[1].split(".")[0])
    assert {node: nodes.count(node) for node in set(nodes)} == {"n1": 10, "n2": 10, "n3": 10}


async def test_take_over_by_another_route_keeps_every_attribute(
        aiohttp_client: ClientFactory, memcached_factory: Factory) -> None:
    n1, n2, app1, app2 = await crosswise_pair(aiohttp_client, memcached_factory)
    session_id = await new_session(app1, first="1", second="2")
    await app1.get("/append", params={"item": "x"})
    assert session_id.endswith("-n2.app1")  # app1 backs up to the other host's node
    original = await attributes_at(n2.port, session_id)

    response = await get_as(app2, session_id, "/show")
    body = await response.json()
    new_id = response.cookies["JSESSIONID"].value
    assert body["attributes"] == original == {"first": "1", "second": "2", "items": ["x"]}
    assert list(body["attributes"]) == ["first", "second", "items"]
    assert body["new"] is False
    assert new_id == body["id"] == session_id.split("-")[0] + "-n1.app2"
    assert await attributes_at(n1.port, new_id) == original  # backed up where app2 puts it
    assert await record_at(n2.port, session_id) is None  # the old copy is gone
    assert manager_of(app2).stats.sessions_loaded == 1


async def test_killed_node_sessions_are_relocated_with_nothing_lost(
        aiohttp_client: ClientFactory, memcached_factory: Factory) -> None:
    servers = [memcached_factory(), memcached_factory()]
    client = await aiohttp_client(make_app(settings_for(*(s.address for s in servers))))
    ids = []
    for index in range(4):
        ids.append(await new_session(client, index=str(index)))
    on_n1 = [i for i in ids if "-n1." in i]
    assert len(on_n1) == 2
    servers[0].kill()

    changed = await get_as(client, on_n1[0], "/put", {"more": "data"})
    moved = changed.cookies["JSESSIONID"].value
    assert moved == on_n1[0].replace("-n1.", "-n2.")
    assert await attributes_at(servers[1].port, moved) == {
        "index": str(ids.index(on_n1[0])), "more": "data"}
    manager = manager_of(client)
    assert [s.alive for s in manager.node_status()] == [False, True]

    unchanged = await get_as(client, on_n1[1], "/show")  # relocated too
    moved = unchanged.cookies["JSESSIONID"].value
    assert moved == on_n1[1].replace("-n1.", "-n2.")
    assert await attributes_at(servers[1].port, moved) == {"index": str(ids.index(on_n1[1]))}
    assert manager.stats.sessions_relocated == 2 and manager.stats.node_failures == 1


async def test_silent_node_costs_one_operation_timeout_then_is_skipped(
        aiohttp_client: ClientFactory, memcached: MemcachedProcess) -> None:
    with SilentServer() as silent:
        settings = settings_for(silent.address, memcached.address, operation_timeout=0.3,
                                jvm_route="app2")
        client = await aiohttp_client(make_app(settings))
        manager = manager_of(client)
        assert manager.node_status()[0].alive is False  # the startup probe timed out
        manager.tracker.mark_alive("n1")  # as when its retry interval is over
        foreign = "3F2504E04F8911D39A0C0305E82C3301-n1.app1"  # lives on the silent node
        started = time.monotonic()
        response = await get_as(client, foreign, "/show")
        assert time.monotonic() - started < 0.3 + 0.1
        body = await response.json()
        assert body["new"] is True and body["id"].endswith("-n2.app2")
        assert [s.alive for s in manager.node_status()] == [False, True]

        started = time.monotonic()  # dead now: skipped without waiting
        response = await get_as(client, foreign, "/show")
        assert time.monotonic() - started < 0.3 / 2
        assert manager.stats.node_failures == 2  # the startup probe, then the load


async def test_backup_to_a_silent_node_answers_and_relocates(
        aiohttp_client: ClientFactory, memcached: MemcachedProcess) -> None:
    with SilentServer() as silent:
        settings = settings_for(silent.address, memcached.address, operation_timeout=0.3)
        client = await aiohttp_client(make_app(settings))
        manager_of(client).tracker.mark_alive("n1")  # dead since the startup probe; retry
        started = time.monotonic()
        session_id = await new_session(client, name="value")  # lands on the silent n1
        # The write to n1 times out within the backup's wait: n1 is marked dead and the
        # session relocated to n2 before the response, which carries the new id.
        assert time.monotonic() - started < 0.3 + 0.1
        manager = manager_of(client)
        assert manager.node_status()[0].alive is False
        assert session_id.endswith("-n2.app1")
        assert manager.stats.sessions_relocated == 1
        assert await attributes_at(memcached.port, session_id) == {"name": "value"}


async def test_invalidate_deletes_and_the_old_id_is_not_adopted(
        aiohttp_client: ClientFactory, memcached: MemcachedProcess) -> None:
    client = await aiohttp_client(make_app(settings_for(memcached.address)))
    session_id = await new_session(client, name="value")
    await client.get("/invalidate")
    assert await record_at(memcached.port, session_id) is None
    assert manager_of(client).local_session_count == 0
    body = await (await get_as(client, session_id, "/show")).json()
    assert body["id"] != session_id and body["new"] is True


async def test_invalid_and_unknown_ids_get_a_fresh_session_without_a_lookup(
        aiohttp_client: ClientFactory, memcached: MemcachedProcess) -> None:
    client = await aiohttp_client(make_app(settings_for(memcached.address)))
    for hostile in ("../../etc", "A" * 5000, "x y", "3F2504E04F8911D39A0C0305E82C3301-n1.a'--"):
        response = await get_as(client, hostile, "/show")
        assert response.status == 200
        assert response.cookies["JSESSIONID"].value != hostile
    assert await server_stat(memcached.port, "cmd_get") == 0
    unknown = "00000000000000000000000000000000-n1.app1"
    response = await get_as(client, unknown, "/show")
    new_id = response.cookies["JSESSIONID"].value
    assert new_id != unknown and not new_id.startswith("0" * 32)  # never adopted
    assert await server_stat(memcached.port, "cmd_get") == 1


async def test_too_large_session_is_refused_and_the_backup_stays(
        aiohttp_client: ClientFactory, memcached: MemcachedProcess) -> None:
    client = await aiohttp_client(make_app(settings_for(memcached.address,
                                                        max_session_size=4096)))
    session_id = await new_session(client, name="value")
    response = await client.get("/big", params={"size": "10000"})
    assert response.status == 413
    assert (await response.text()).startswith("session too large: 10")
    assert "limit 4096" in await response.text()
    assert await attributes_at(memcached.port, session_id) == {"name": "value"}
    body = await (await client.get("/show")).json()
    assert body["attributes"] == {"name": "value"}
    assert (await client.get("/big", params={"size": "100"})).status == 200


async def test_unstorable_value_is_refused_when_set(
        aiohttp_client: ClientFactory, memcached: MemcachedProcess) -> None:
    client = await aiohttp_client(make_app(settings_for(memcached.address)))
    response = await client.get("/object")
    assert response.status == 400
    assert "session attribute 'thing'" in await response.text()
    assert "object is not storable" in await response.text()


async def test_msgpack_transcoder_and_reading_json_records(
        aiohttp_client: ClientFactory, memcached_factory: Factory) -> None:
    n1, _, json_app, msgpack_app = await crosswise_pair(
        aiohttp_client, memcached_factory, transcoder="msgpack")
    session_id = await new_session(json_app, name="välue")
    response = await get_as(msgpack_app, session_id, "/put", {"more": "1"})
    new_id = response.cookies["JSESSIONID"].value
    record = await record_at(n1.port, new_id)
    assert record is not None and record.transcoder == "msgpack"
    assert await attributes_at(n1.port, new_id) == {"name": "välue", "more": "1"}


async def test_async_backup_answers_first_and_close_flushes_within_the_timeout(
        aiohttp_client: ClientFactory, memcached: MemcachedProcess) -> None:
    with DelayingProxy(memcached.port) as proxy:
        settings = settings_for(proxy.address, session_backup_async="true",
                                session_backup_timeout=0.1)
        client = await aiohttp_client(make_app(settings))
        await client.get("/show")  # the pool's connections are open before the delay
        manager = manager_of(client)
        await manager.flush(1.0)
        written = manager.stats.backups_written
        proxy.reply_delay = 0.2
        response = await client.get("/put", params={"a": "1"})
        session_id = (await response.json())["id"]
        assert manager.stats.backups_written == written  # answered before the backup
        await manager.flush(2.0)
        assert manager.stats.backups_written == written + 1
        assert await attributes_at(memcached.port, session_id) == {"a": "1"}

        proxy.reply_delay = 0.5
        await client.get("/put", params={"a": "2"})
        started = time.monotonic()
        await manager.close()  # waits session_backup_timeout (0.1 s), not the backup
        assert time.monotonic() - started < 0.4
        assert manager.stats.backups_written == written + 1
        proxy.reply_delay = 0.0


async def test_backup_slower_than_session_backup_timeout_is_a_503_and_goes_on(
        aiohttp_client: ClientFactory, memcached: MemcachedProcess) -> None:
    # Durable acknowledgement: the answer waits session_backup_timeout at most, and a change
    # not confirmed in memcached by then is not a 2xx. The write goes on and lands later.
    with DelayingProxy(memcached.port) as proxy:
        settings = settings_for(proxy.address, session_backup_timeout=0.05,
                                operation_timeout=1.0)
        client = await aiohttp_client(make_app(settings))
        session_id = (await (await client.get("/show")).json())["id"]  # no data: not stored
        proxy.reply_delay = 0.3
        manager = manager_of(client)
        written = manager.stats.backups_written
        started = time.monotonic()
        response = await client.get("/put", params={"name": "value"})
        assert time.monotonic() - started < 0.25  # not held for the whole 0.3 s write
        assert response.status == 503 and response.headers["Retry-After"] == "1"
        assert "not confirmed in memcached within 0.05s" in await response.text()
        assert manager.stats.backups_timed_out == 1 and manager.stats.backups_unconfirmed == 1
        assert manager.stats.backups_written == written
        await manager.flush(2.0)  # it still completes: counted as written, node alive
        assert manager.stats.backups_written == written + 1
        assert manager.node_status()[0].alive
        assert await attributes_at(memcached.port, session_id) == {"name": "value"}


async def test_cookie_flags_url_rewriting_and_path_parameter(
        aiohttp_client: ClientFactory, memcached: MemcachedProcess) -> None:
    client = await aiohttp_client(make_app(settings_for(memcached.address)))
    response = await client.get("/show", headers={"X-Forwarded-Proto": "https"})
    jar_cookie = response.cookies["JSESSIONID"]
    assert jar_cookie["secure"] and jar_cookie["httponly"] and jar_cookie["samesite"] == "Lax"
    body = await response.json()
    assert body["link"] == f"/test;jsessionid={body['id']}?x=1"  # no cookie was sent
    client.session.cookie_jar.clear()

    again = await client.get(f"/show;jsessionid={body['id']}")
    again_body = await again.json()
    assert again_body["id"] == body["id"] and again_body["new"] is False
    assert again_body["link"] == f"/test;jsessionid={body['id']}?x=1"
    with_cookie = await (await client.get("/show", headers=cookie(body["id"]))).json()
    assert with_cookie["link"] == "/test?x=1"
    plain = await client.get("/show", headers={"Cookie": "JSESSIONID=x"})
    assert "secure" not in str(plain.cookies["JSESSIONID"]).lower()


async def test_http_exception_is_a_response_and_the_session_is_saved(
        aiohttp_client: ClientFactory, memcached: MemcachedProcess) -> None:
    client = await aiohttp_client(make_app(settings_for(memcached.address)))
    response = await client.get("/redirect", allow_redirects=False)
    assert response.status == 302
    session_id = response.cookies["JSESSIONID"].value
    assert await attributes_at(memcached.port, session_id) == {"before_redirect": True}


async def test_ignored_paths_are_not_backed_up(
        aiohttp_client: ClientFactory, memcached: MemcachedProcess) -> None:
    client = await aiohttp_client(make_app(settings_for(memcached.address)))
    await client.get("/logo.png")
    assert await server_stat(memcached.port, "cmd_set") == 0
    assert manager_of(client).stats.requests_ignored == 1


async def test_all_nodes_down_sessions_keep_working_from_memory(
        aiohttp_client: ClientFactory, memcached: MemcachedProcess) -> None:
    client = await aiohttp_client(make_app(settings_for(memcached.address)))
    await new_session(client, name="value")
    memcached.kill()
    for index in range(3):
        response = await client.get("/put", params={f"k{index}": "v"})
        assert response.status == 200
    body = await (await client.get("/show")).json()
    assert body["attributes"] == {"name": "value", "k0": "v", "k1": "v", "k2": "v"}
    assert manager_of(client).stats.backups_failed >= 1


async def test_statistics_snapshot(aiohttp_client: ClientFactory,
                                   memcached_factory: Factory) -> None:
    n1, n2 = memcached_factory(), memcached_factory()
    app1 = await aiohttp_client(make_app(settings_for(n1.address, n2.address)))
    app2 = await aiohttp_client(make_app(settings_for(n1.address, n2.address,
                                                      jvm_route="app2")))
    session_id = await new_session(app1, a="1")
    for _ in range(5):
        await app1.get("/put", params={"a": str(_)})
    await app1.get("/show")
    await get_as(app2, session_id, "/show")
    snapshot = manager_of(app1).stats.snapshot()
    assert snapshot["sessions_created"] == 1 and snapshot["backups_written"] == 6
    assert snapshot["backups_skipped_unchanged"] == 1
    assert 0 < snapshot["backup_latency_p50"] <= snapshot["backup_latency_p99"] < 1
    loaded = manager_of(app2).stats.snapshot()
    assert loaded["sessions_loaded"] == 1 and 0 < loaded["load_latency_p99"] < 1
    for key in ("sessions_relocated", "sessions_expired", "sessions_invalidated",
                "backups_failed", "backups_refreshed", "node_failures", "lock_waits",
                "lock_timeouts", "requests_ignored"):
        assert snapshot[key] == 0
    await asyncio.sleep(0)


async def test_dead_node_is_used_again_after_the_retry_interval(
        aiohttp_client: ClientFactory, memcached_factory: Factory) -> None:
    clock = Clock()
    n1, n2 = memcached_factory(), memcached_factory()
    client = await aiohttp_client(make_app(settings_for(n1.address, n2.address), clock))
    manager = manager_of(client)
    n1.kill()
    first = await new_session(client, a="1")  # n1 refuses: relocated to n2 at once
    assert first.endswith("-n2.app1")
    assert [s.alive for s in manager.node_status()] == [False, True]
    nodes = [(await new_session(client, a="1")).split("-")[1][:2] for _ in range(4)]
    assert nodes == ["n2"] * 4  # skipped, without waiting, while dead

    n1.start()
    clock.advance(9)
    assert [s.alive for s in manager.node_status()] == [False, True]
    clock.advance(1)  # node_retry_interval (10 s) over: probed by the next operation
    nodes = [(await new_session(client, a="1")).split("-")[1][:2] for _ in range(4)]
    assert sorted(nodes) == ["n1", "n1", "n2", "n2"]
    assert [s.alive for s in manager.node_status()] == [True, True]


async def test_streamed_response_is_backed_up_without_a_cookie(
        aiohttp_client: ClientFactory, memcached: MemcachedProcess) -> None:
    client = await aiohttp_client(make_app(settings_for(memcached.address)))
    response = await client.get("/stream")
    assert await response.read() == b"streamed"
    assert "JSESSIONID" not in response.cookies  # headers were sent before the handler ended
    manager = manager_of(client)
    assert manager.stats.backups_written == 1 and manager.local_session_count == 1


async def test_concurrent_requests_never_hide_an_in_place_change(
        memcached: MemcachedProcess) -> None:
    async with build_manager(settings=settings_for(memcached.address)) as manager:
        session, _ = await manager.open(None)
        session.active_requests += 1
        session["items"] = []
        await manager.finish(session, None, manager.plan_save(session, "/"))

        first, _ = await manager.open(session.id)  # request A takes the list...
        first.active_requests += 1
        items = first["items"]
        second, _ = await manager.open(session.id)  # ...request B ends, unchanged...
        second.active_requests += 1
        assert second is first
        assert manager.plan_save(second, "/") is None
        assert isinstance(items, list)
        items.append("x")  # ...then A changes the list in place
        work = manager.plan_save(first, "/")
        assert work is not None
        await manager.finish(first, None, work)
        assert await attributes_at(memcached.port, session.id) == {"items": ["x"]}


async def test_a_session_taken_over_elsewhere_is_reloaded_not_served_stale(
        aiohttp_client: ClientFactory, memcached_factory: Factory) -> None:
    *_, app1, app2 = await crosswise_pair(aiohttp_client, memcached_factory)
    session_id = await new_session(app1, step="1")
    response = await get_as(app2, session_id, "/put", {"step": "2"})  # app1 seemed down
    taken_over = response.cookies["JSESSIONID"].value
    assert taken_over.endswith(".app2")

    back = await get_as(app1, taken_over, "/show")  # the client returns to app1
    body = await back.json()
    assert body["attributes"] == {"step": "2"}  # app2's newer state, not app1's memory
    assert body["id"].endswith(".app1") and back.cookies["JSESSIONID"].value == body["id"]


@pytest.mark.parametrize(("trusted", "secure"), [("127.0.0.0/8", True), ("none", False)])
async def test_forwarded_scheme_counts_only_from_a_trusted_proxy(
        aiohttp_client: ClientFactory, memcached: MemcachedProcess, trusted: str,
        secure: bool) -> None:
    settings = settings_for(memcached.address, trusted_proxies=trusted)
    client = await aiohttp_client(make_app(settings))
    response = await client.get("/show", headers={"X-Forwarded-Proto": "https"})
    assert response.status == 200
    assert ("; Secure" in response.headers["Set-Cookie"]) is secure
