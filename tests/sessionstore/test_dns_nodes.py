"""memcached_nodes = "dns:NAME:PORT" against real memcached processes (issue 9).

Addresses come from the real getaddrinfo (`localhost`) or from `DnsAnswer`, a real resolver
function over a mutable list of addresses: memcached servers on 127.0.0.1, .2, .3... (all of
127.0.0.0/8 is loopback) share one port, exactly like the tasks behind `tasks.memcached`.
Rounds are run with `discovery.refresh()` instead of waiting `resolver_valid`, except in the
test of the background loop itself.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter
from collections.abc import Sequence

import pytest

from sessionstore import MANAGER_KEY, SessionManager, build_manager
from sessionstore.codec import Attributes
from sessionstore.discovery import NodeChange
from sessionstore.nodes import NO_NODE, NodeSpec, NodeStatus
from sessionstore.resolver import NodeDiscovery
from tests.support.memcached import MemcachedProcess
from tests.support.ports import free_port

from .apps import make_app, settings_for
from .clients import Client, ClientFactory, Factory, new_session
from .stored import attributes_at


class DnsAnswer:
    """What the name resolves to right now: addresses, or a failure, or no answer at all."""

    def __init__(self, addresses: Sequence[str] = ()) -> None:
        self.addresses = list(addresses)
        self.failure: Exception | None = None
        self.hang = False
        self.calls = 0

    async def __call__(self, name: str) -> list[str]:
        self.calls += 1
        if self.hang:
            await asyncio.sleep(3600)
        if self.failure is not None:
            raise self.failure
        return list(self.addresses)


def node_id(host: str) -> str:
    return host.replace(".", "_")


def node_of(session_id: str) -> str:
    return session_id.split("-")[1].split(".")[0]


def start_servers(factory: Factory, count: int, port: int) -> dict[str, MemcachedProcess]:
    """memcached on 127.0.0.1 .. 127.0.0.<count>, all on `port`, by node id."""
    servers = [factory(host=f"127.0.0.{i}", port=port) for i in range(1, count + 1)]
    return {node_id(server.host): server for server in servers}


async def dns_app(aiohttp_client: ClientFactory, answer: DnsAnswer, port: int,
                  **overrides: object) -> tuple[Client, SessionManager, NodeDiscovery]:
    settings = settings_for(memcached_nodes=f"dns:tasks.memcached:{port}", **overrides)
    client = await aiohttp_client(make_app(settings, resolver=answer))
    manager = client.app[MANAGER_KEY]
    assert manager.discovery is not None
    return client, manager, manager.discovery


async def visit(client: Client, session_id: str, path: str = "/show",
                **params: str) -> tuple[str, dict[str, object]]:
    """One request with this session's cookie: the id it has afterwards, and its attributes."""
    client.session.cookie_jar.clear()
    response = await client.get(path, params=params,
                                headers={"Cookie": f"JSESSIONID={session_id}"})
    assert response.status == 200
    body = await response.json()
    cookie = response.cookies.get("JSESSIONID")  # sent only when the id changed
    new_id = session_id if cookie is None else cookie.value
    attributes = body["attributes"]
    assert isinstance(attributes, dict)
    return new_id, attributes


async def stored(server: MemcachedProcess, key: str) -> Attributes | None:
    """The attributes stored under `key` in that server, as an operator would read them."""
    return await attributes_at(server.port, key, server.host)


def ids_of(manager: SessionManager) -> list[str]:
    return [status.id for status in manager.node_status()]


async def test_localhost_through_the_real_getaddrinfo(
        aiohttp_client: ClientFactory, memcached: MemcachedProcess) -> None:
    settings = settings_for(memcached_nodes=f"dns:localhost:{memcached.port}")
    client = await aiohttp_client(make_app(settings))
    manager = client.app[MANAGER_KEY]
    # ::1 too, where localhost has it: refused (memcached listens on 127.0.0.1), so not used.
    assert manager.node_status() == [
        NodeStatus("127_0_0_1", "127.0.0.1", memcached.port, alive=True, failover=False)]
    session_id = await new_session(client, name="value")
    assert session_id.endswith("-127_0_0_1.app1")
    assert await attributes_at(memcached.port, session_id) == {"name": "value"}
    snapshot = manager.stats.snapshot()
    assert snapshot["nodes_discovered"] == 1 and snapshot["resolver_failures"] == 0


async def test_n_nodes_spread_and_join_or_leave_moves_only_what_must_move(
        aiohttp_client: ClientFactory, memcached_factory: Factory) -> None:
    port = free_port()
    servers = start_servers(memcached_factory, 6, port)
    answer = DnsAnswer([f"127.0.0.{i}" for i in range(1, 6)])  # .6 runs, not yet in DNS
    # 130 new sessions from one client in well under a second: no creation rate limit here.
    client, manager, discovery = await dns_app(aiohttp_client, answer, port,
                                               session_create_rate=0)
    five = [node_id(f"127.0.0.{i}") for i in range(1, 6)]
    assert ids_of(manager) == five

    sessions = {await new_session(client, number=str(n)): str(n) for n in range(50)}
    assert Counter(node_of(s) for s in sessions) == dict.fromkeys(five, 10)

    answer.addresses.append("127.0.0.6")  # scale up: a sixth node appears
    change = await discovery.refresh()
    assert change is not None and [n.id for n in change.joined] == ["127_0_0_6"]
    for session_id, number in sessions.items():
        assert await visit(client, session_id) == (session_id, {"number": number})
    assert manager.stats.sessions_relocated == 0  # joining moved nothing
    later = [await new_session(client, a="1") for _ in range(60)]
    assert Counter(node_of(s) for s in later) == dict.fromkeys([*five, "127_0_0_6"], 10)

    answer.addresses.remove("127.0.0.3")  # scale down: .3 leaves DNS (still running: drain)
    change = await discovery.refresh()
    assert change == NodeChange(joined=(), left=(NodeSpec("127_0_0_3", "127.0.0.3", port),))
    assert "127_0_0_3" not in ids_of(manager) and "127_0_0_3" not in manager.clients
    moved = 0
    for session_id, number in sessions.items():
        new_id, attributes = await visit(client, session_id, "/put", more="1")
        assert attributes == {"number": number, "more": "1"}
        if node_of(session_id) == "127_0_0_3":
            moved += 1
            assert node_of(new_id) != "127_0_0_3" and new_id[:32] == session_id[:32]
            assert await stored(servers[node_of(new_id)], new_id) == attributes
        else:
            assert new_id == session_id  # not on the node that left: not moved
    assert moved == 10 == manager.stats.sessions_relocated
    fresh = [node_of(await new_session(client, a="1")) for _ in range(20)]
    assert "127_0_0_3" not in fresh
    snapshot = manager.stats.snapshot()
    assert snapshot["nodes_discovered"] == 6 and snapshot["nodes_drained"] == 1


async def test_non_sticky_sessions_of_a_vanished_node_come_back_from_their_bak_copy(
        aiohttp_client: ClientFactory, memcached_factory: Factory) -> None:
    port = free_port()
    servers = start_servers(memcached_factory, 3, port)
    answer = DnsAnswer(["127.0.0.1", "127.0.0.2", "127.0.0.3"])
    client, manager, discovery = await dns_app(aiohttp_client, answer, port, sticky="false")
    sessions = {await new_session(client, number=str(n)): str(n) for n in range(6)}
    on_two = [s for s in sessions if node_of(s) == "127_0_0_2"]
    assert len(on_two) == 2
    # The bak: copy goes to the next node in id order, the same on every app server.
    assert await stored(servers["127_0_0_3"], "bak:" + on_two[0]) == {
        "number": sessions[on_two[0]]}

    servers["127_0_0_2"].kill()  # the task dies and leaves DNS
    answer.addresses.remove("127.0.0.2")
    await discovery.refresh()
    for session_id in on_two:
        new_id, attributes = await visit(client, session_id, "/put", more="1")
        assert attributes == {"number": sessions[session_id], "more": "1"}
        assert node_of(new_id) in {"127_0_0_1", "127_0_0_3"}
        assert await stored(servers[node_of(new_id)], new_id) == attributes
    for session_id in set(sessions) - set(on_two):
        assert await visit(client, session_id) == (session_id, {"number": sessions[session_id]})
    assert manager.stats.sessions_relocated == 2


async def test_an_address_is_used_only_after_it_answers_version(
        aiohttp_client: ClientFactory, memcached_factory: Factory,
        caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    start_servers(memcached_factory, 1, port)
    answer = DnsAnswer(["127.0.0.1", "127.0.0.2"])  # nothing listens on 127.0.0.2 yet
    caplog.set_level(logging.INFO, logger="sessionstore")
    client, manager, discovery = await dns_app(aiohttp_client, answer, port)
    await discovery.refresh()
    assert ids_of(manager) == ["127_0_0_1"]
    assert {node_of(await new_session(client, a="1")) for _ in range(4)} == {"127_0_0_1"}
    waiting = [r for r in caplog.records if "does not answer yet" in r.getMessage()]
    assert len(waiting) == 1 and "127_0_0_2" in waiting[0].getMessage()  # once, not per round

    memcached_factory(host="127.0.0.2", port=port)
    change = await discovery.refresh()
    assert change is not None and [n.id for n in change.joined] == ["127_0_0_2"]
    assert ids_of(manager) == ["127_0_0_1", "127_0_0_2"]
    assert {node_of(await new_session(client, a="1")) for _ in range(4)} == {
        "127_0_0_1", "127_0_0_2"}
    assert any(f"127_0_0_2 (127.0.0.2:{port}" in r.getMessage() and "joined" in r.getMessage()
               for r in caplog.records)


async def test_a_name_that_does_not_resolve_never_stops_the_server(
        aiohttp_client: ClientFactory, memcached: MemcachedProcess,
        caplog: pytest.LogCaptureFixture) -> None:
    answer = DnsAnswer()
    answer.failure = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    caplog.set_level(logging.INFO, logger="sessionstore")
    client, manager, discovery = await dns_app(aiohttp_client, answer, memcached.port)
    discovery.watch.timeout = 0.2
    assert manager.node_status() == []  # degraded: no node to back up to
    session_id = await new_session(client, name="value")  # sticky: works from memory
    assert node_of(session_id) == NO_NODE
    assert await visit(client, session_id) == (session_id, {"name": "value"})

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
                and "memcached_nodes dns:tasks.memcached" in r.getMessage()]

    for _ in range(3):
        assert await discovery.refresh() is None
    assert len(warnings()) == 1  # one line per change of the problem, not one per round
    assert "'tasks.memcached' does not resolve (Name or service not known)" in warnings()[0]
    answer.failure = None  # resolves, but to nothing
    await discovery.refresh()
    answer.failure = RuntimeError("resolver bug")
    await discovery.refresh()
    answer.failure, answer.hang = None, True
    await discovery.refresh()  # bounded by resolve_timeout
    assert [w.split("'tasks.memcached' ")[1].split(";")[0] for w in warnings()] == [
        "does not resolve (Name or service not known)", "resolves to no address",
        "resolver failed (RuntimeError: resolver bug)",
        "no answer from the resolver within 0.2s"]
    assert manager.stats.snapshot()["resolver_failures"] == 7

    answer.hang, answer.addresses = False, ["127.0.0.1"]
    await discovery.refresh()
    assert ids_of(manager) == ["127_0_0_1"]
    assert any("resolves again: 127.0.0.1" in r.getMessage() for r in caplog.records)
    moved, attributes = await visit(client, session_id)  # backed up at last
    assert moved == session_id.replace(f"-{NO_NODE}.", "-127_0_0_1.")
    assert await attributes_at(memcached.port, moved) == {"name": "value"} == attributes

    answer.failure = socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
    await discovery.refresh()  # DNS trouble later on: the node list stays as it was
    assert ids_of(manager) == ["127_0_0_1"]
    assert await visit(client, moved, "/put", more="1") == (
        moved, {"name": "value", "more": "1"})
    assert "keeping the 1 node listed" in warnings()[-1]


async def test_real_getaddrinfo_failure_is_a_log_line_not_a_crash(
        aiohttp_client: ClientFactory) -> None:
    settings = settings_for(memcached_nodes="dns:no-such-host.invalid:11211")
    client = await aiohttp_client(make_app(settings))
    manager = client.app[MANAGER_KEY]
    assert manager.node_status() == []
    assert manager.stats.resolver_failures == 1
    assert (await client.get("/put", params={"a": "1"})).status == 200


async def test_the_background_loop_re_resolves_every_resolver_valid_seconds(
        memcached_factory: Factory) -> None:
    port = free_port()
    start_servers(memcached_factory, 2, port)
    answer = DnsAnswer(["127.0.0.1"])
    settings = settings_for(memcached_nodes=f"dns:tasks.memcached:{port}", resolver_valid=0.05)
    async with build_manager(settings=settings, resolver=answer) as manager:
        assert ids_of(manager) == ["127_0_0_1"]
        answer.addresses = ["127.0.0.2"]
        for _ in range(200):  # at most 2 s; rounds come every 0.05 s
            if ids_of(manager) == ["127_0_0_2"]:
                break
            await asyncio.sleep(0.01)
        assert ids_of(manager) == ["127_0_0_2"]
        assert list(manager.clients) == ["127_0_0_2"]
    calls = answer.calls
    await asyncio.sleep(0.15)
    assert answer.calls == calls  # closing the manager stopped the loop


async def test_a_static_list_has_no_discovery_at_all(memcached: MemcachedProcess) -> None:
    settings = settings_for(memcached.address)
    async with build_manager(settings=settings) as manager:
        assert manager.discovery is None and not manager.tracker.discovered
        assert manager.stats.snapshot()["nodes_discovered"] == 0
    with pytest.raises(ValueError, match="resolver= needs memcached_nodes"):
        build_manager(settings=settings, resolver=DnsAnswer())


async def test_every_app_server_derives_the_same_node_ids(
        aiohttp_client: ClientFactory, memcached_factory: Factory) -> None:
    port = free_port()
    servers = start_servers(memcached_factory, 2, port)
    app1, _, _ = await dns_app(aiohttp_client, DnsAnswer(["127.0.0.2", "127.0.0.1"]), port)
    app2, manager2, _ = await dns_app(aiohttp_client, DnsAnswer(["127.0.0.1", "127.0.0.2"]),
                                      port, jvm_route="app2")
    session_id = await new_session(app1, name="value")
    taken_over, attributes = await visit(app2, session_id)  # app1 died: app2 takes over
    assert attributes == {"name": "value"}
    assert taken_over == session_id.replace(".app1", ".app2")  # the same node, by its id
    assert await stored(servers[node_of(session_id)], taken_over) == {"name": "value"}
    assert manager2.stats.sessions_relocated == 0


async def test_a_node_not_yet_discovered_here_is_read_through_its_bak_copy(
        aiohttp_client: ClientFactory, memcached_factory: Factory) -> None:
    port = free_port()
    start_servers(memcached_factory, 3, port)
    every = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    ahead, _, _ = await dns_app(aiohttp_client, DnsAnswer(every), port, sticky="false")
    # This server has not seen 127.0.0.2 yet (its next round is up to resolver_valid away).
    behind, manager, _ = await dns_app(aiohttp_client, DnsAnswer(["127.0.0.1", "127.0.0.3"]),
                                       port, sticky="false", jvm_route="app2")
    sessions = [await new_session(ahead, n=str(n)) for n in range(3)]
    (on_two,) = [s for s in sessions if node_of(s) == "127_0_0_2"]
    new_id, attributes = await visit(behind, on_two, "/put", more="1")
    assert attributes == {"n": str(sessions.index(on_two)), "more": "1"}
    assert node_of(new_id) in {"127_0_0_1", "127_0_0_3"}  # moved to a node it knows
    assert manager.stats.sessions_loaded == 1
