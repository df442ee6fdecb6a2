"""GET /health as the proxy's cluster view reads it: take-overs, relocations, failed backups
and each memcached node's items and memory, through a real failover on real memcached."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from sessionstore.evictions import EvictionCounts, NodeMemory
from tests.support.memcached import MemcachedProcess

from .apps import AppClient, Client

FORM = {"dataName": "a", "dataValue": "1"}
JSON = {"Accept": "application/json"}


async def health(client: Client) -> dict[str, Any]:
    response = await client.get("/health")
    assert response.status == 200
    body: dict[str, Any] = await response.json()
    return body


async def health_once_read(client: Client) -> dict[str, Any]:
    """/health once every alive node's stats have been read (the first poll is at start)."""
    deadline = time.monotonic() + 5
    while True:
        body = await health(client)
        if all(node["items"] is not None for node in body["nodes"] if node["alive"]):
            return body
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.02)


async def test_health_has_every_field_of_the_cluster_view(
    app_client: AppClient, memcached_factory: Callable[..., MemcachedProcess]
) -> None:
    n1, n2 = memcached_factory(), memcached_factory(memory_mb=16)
    client = await app_client(n1, n2, failover_nodes="n1")
    assert (await client.post("/test", data=FORM, headers=JSON)).status == 200
    body = await health_once_read(client)
    assert body["sessions_taken_over"] == 0 and body["taken_over_from"] == {}
    assert body["sessions_relocated"] == 0 and body["relocations"] == {}
    assert body["backups_failed"] == 0
    nodes = {node["id"]: node for node in body["nodes"]}
    assert set(nodes["n1"]) == {"id", "host", "port", "alive", "failover", "evictions",
                                "evicting", "backups_failed", "items", "bytes",
                                "limit_maxbytes"}
    assert nodes["n1"]["limit_maxbytes"] == 64 * 1024**2
    assert nodes["n2"]["limit_maxbytes"] == 16 * 1024**2
    assert nodes["n1"]["evictions"] == 0 and nodes["n1"]["evicting"] is False
    assert all(node["backups_failed"] == 0 for node in nodes.values())
    assert all(isinstance(node[key], int) for node in nodes.values()
               for key in ("items", "bytes"))


async def test_a_take_over_and_a_relocation_are_counted_where_they_happened(
    app_client: AppClient, memcached_factory: Callable[..., MemcachedProcess]
) -> None:
    """app1 backs up to n2 (n1 is its failover node), app2 to n1. app2 takes over app1's
    session; then n2 dies and app1's next change of a session of its own moves it to n1."""
    n1, n2 = memcached_factory(), memcached_factory()
    app1 = await app_client(n1, n2, failover_nodes="n1", route="app1")
    app2 = await app_client(n1, n2, failover_nodes="n2", route="app2")
    first = await (await app1.post("/test", data=FORM, headers=JSON)).json()
    assert first["session_id"].endswith("-n2.app1")
    cookie = {"Cookie": f"JSESSIONID={first['session_id']}"}
    taken = await (await app2.get("/test", headers=JSON | cookie)).json()
    assert taken["server"] == "app2" and taken["attributes"] == {"a": "1"}
    view = await health(app2)
    assert view["sessions_taken_over"] == 1 and view["taken_over_from"] == {"app1": 1}

    second = await (await app1.post("/test", data=FORM, headers=JSON)).json()
    n2.kill()
    cookie = {"Cookie": f"JSESSIONID={second['session_id']}"}
    response = await app1.post("/test", data={"dataName": "b", "dataValue": "2"},
                               headers=JSON | cookie)
    assert response.status == 200
    # The page was made before the write failed; the cookie carries the new id.
    assert response.cookies["JSESSIONID"].value.endswith("-n1.app1")
    view = await health(app1)
    assert view["sessions_relocated"] == 1 and view["relocations"] == {"n2": {"n1": 1}}
    assert view["sessions_taken_over"] == 0
    nodes = {node["id"]: node for node in view["nodes"]}
    assert nodes["n2"]["alive"] is False and nodes["n1"]["alive"] is True
    # The write to n2 failed there; the session's backup as a whole did not (it went to n1).
    assert (nodes["n2"]["backups_failed"], nodes["n1"]["backups_failed"]) == (1, 0)
    assert view["backups_failed"] == 0


def test_node_memory_is_unknown_until_read_and_forgotten_with_the_node() -> None:
    counts = EvictionCounts()
    assert counts.status("n1", 0.0).items is None
    counts.observe_memory("n1", NodeMemory.from_stats(
        {"curr_items": "3", "bytes": "4096", "limit_maxbytes": "67108864", "evictions": "0"}))
    status = counts.status("n1", 0.0)
    assert (status.items, status.bytes, status.limit_maxbytes) == (3, 4096, 64 * 1024**2)
    assert counts.nodes() == {"n1"}
    counts.forget("n1")
    assert counts.status("n1", 0.0).limit_maxbytes is None
    # A server without these counters (a proxy speaking the protocol) says nothing about them.
    odd = NodeMemory.from_stats({"curr_items": "-1", "bytes": "x"})
    assert (odd.items, odd.bytes, odd.limit_maxbytes) == (None, None, None)
