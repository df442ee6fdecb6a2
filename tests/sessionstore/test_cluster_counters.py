"""The counters of the cluster view (issue 17): take-overs by former route, relocations by
node pair, failed backups by node. Plain attributes on Stats, outside snapshot()'s numbers."""

from __future__ import annotations

from tests.support.memcached import MemcachedProcess

from .apps import make_app, settings_for
from .clients import ClientFactory, Factory, crosswise_pair, get_as, manager_of, new_session


async def test_a_take_over_is_counted_by_the_route_it_came_from(
        aiohttp_client: ClientFactory, memcached_factory: Factory) -> None:
    _, _, app1, app2 = await crosswise_pair(aiohttp_client, memcached_factory)
    session_id = await new_session(app1, name="value")
    body = await (await get_as(app2, session_id, "/show")).json()
    assert body["id"].endswith(".app2") and body["attributes"] == {"name": "value"}
    stats = manager_of(app2).stats
    assert stats.sessions_taken_over == 1 and stats.taken_over_from == {"app1": 1}
    await get_as(app2, body["id"], "/show")  # its own session now: no second take-over
    assert stats.taken_over_from == {"app1": 1}
    assert manager_of(app1).stats.taken_over_from == {}


async def test_a_relocation_is_counted_by_its_nodes(
        aiohttp_client: ClientFactory, memcached_factory: Factory) -> None:
    n1, n2 = memcached_factory(), memcached_factory()
    client = await aiohttp_client(make_app(settings_for(n1.address, n2.address,
                                                        sticky="false")))
    session_id = await new_session(client, name="value")
    n1.kill()
    body = await (await get_as(client, session_id, "/show")).json()
    assert body["id"] == session_id.replace("-n1.", "-n2.")
    stats = manager_of(client).stats
    assert stats.sessions_relocated == 1 and stats.relocations == {"n1": {"n2": 1}}


async def test_failed_backups_are_counted_by_node(
        aiohttp_client: ClientFactory, memcached: MemcachedProcess) -> None:
    client = await aiohttp_client(make_app(settings_for(memcached.address)))
    session_id = await new_session(client, name="value")
    memcached.kill()
    response = await get_as(client, session_id, "/put", {"name": "changed"})
    assert response.status == 200  # sticky, every node dead: served from memory
    stats = manager_of(client).stats
    assert stats.backups_failed_by_node == {"n1": 1} and stats.backups_failed == 1


async def test_the_mappings_stay_out_of_the_snapshot(memcached: MemcachedProcess,
                                                     aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(make_app(settings_for(memcached.address)))
    stats = manager_of(client).stats
    stats.taken_over("app9")
    stats.relocated("n1", "n2")
    stats.backup_failed_on("n1")
    snapshot = stats.snapshot()
    assert all(isinstance(value, int | float) for value in snapshot.values())
    assert snapshot["sessions_taken_over"] == 1 and snapshot["sessions_relocated"] == 1
    assert not {"taken_over_from", "relocations", "backups_failed_by_node"} & set(snapshot)
