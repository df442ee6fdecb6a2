"""memcached evictions: the operator is told, and live sessions are written again in time.

The attacker's run: the backup memcached (-m 8) evicted under a flood; the owner app server
was killed and all 20 of its sessions came back empty, with a 200, and nothing had said that
backups were being thrown away. Here the owner notices the evictions on its next stats poll,
says so (log line, /health, /metrics) and re-writes the sessions memcached lost, so that the
other app server finds every one of them after the owner is SIGKILLed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from tests.support.memcached import MemcachedProcess

from .processes import AppServerProcess, metric

SESSIONS = 20
SESSION_DATA = "d" * 40_000  # 20 sessions of 40 kB: a small part of an 8 MB memcached
JSON = {"Accept": "application/json"}
POLL = "0.3"  # node_retry_interval: how often the owner reads its nodes' stats


async def memcached_stat(server: MemcachedProcess, name: str) -> int:
    async with asyncio.timeout(5):
        reader, writer = await asyncio.open_connection(server.host, server.port)
        try:
            writer.write(b"stats\r\n")
            reply = await reader.readuntil(b"END\r\n")
        finally:
            writer.close()
            await writer.wait_closed()
    for line in reply.decode().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == name:
            return int(parts[2])
    raise KeyError(name)


async def flood_until_evicting(server: MemcachedProcess) -> int:
    """Other data of the same size, straight into memcached, until it has evicted as many
    items as there are sessions (the least recently used go first: the sessions); how many
    sets that took."""
    value = b"f" * len(SESSION_DATA)
    reader, writer = await asyncio.open_connection(server.host, server.port)
    sent = 0
    try:
        while await memcached_stat(server, "evictions") < SESSIONS:
            assert sent < 2000, "memcached never evicted"
            for _ in range(50):
                writer.write(b"set flood%d 0 3600 %d\r\n%s\r\n" % (sent, len(value), value))
                sent += 1
            await writer.drain()
            for _ in range(50):
                assert await reader.readline() == b"STORED\r\n"
    finally:
        writer.close()
        await writer.wait_closed()
    return sent


async def get_json(http: aiohttp.ClientSession, url: str, **kwargs: Any) -> Any:
    async with http.get(url, **kwargs) as response:
        assert response.status == 200
        return await response.json()


async def test_evicted_backups_are_reported_and_written_again_before_failover(
    appserver_process: Callable[..., AppServerProcess],
    memcached_factory: Callable[..., MemcachedProcess],
) -> None:
    n1, n2 = memcached_factory(), memcached_factory(memory_mb=8)
    # app1 backs up to n2 (the small one), app2 to n1: the crosswise assignment.
    app1 = appserver_process("app1", n1, n2, FAILOVER_NODES="n1", NODE_RETRY_INTERVAL=POLL)
    app2 = appserver_process("app2", n1, n2, FAILOVER_NODES="n2")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), headers=JSON) as http:
        sessions = {}
        for number in range(SESSIONS):
            form = {"dataName": "data", "dataValue": f"{number}:{SESSION_DATA}"}
            async with http.post(app1.url("/test"), data=form) as response:
                assert response.status == 200
                sessions[(await response.json())["session_id"]] = form["dataValue"]
        assert all(session_id.endswith("-n2.app1") for session_id in sessions)

        await flood_until_evicting(n2)
        deadline = time.monotonic() + 10
        while True:  # the owner's next polls: evictions seen, lost sessions written again
            metrics = await (await http.get(app1.url("/metrics"))).text()
            if metric(metrics, "sessionha_sessionstore_sessions_rewritten_total") >= SESSIONS:
                break
            assert time.monotonic() < deadline, metrics
            await asyncio.sleep(0.1)

        node = (await get_json(http, app1.url("/health")))["nodes"][1]
        assert node["id"] == "n2" and node["evicting"] is True and node["evictions"] > 0
        assert metric(metrics, "sessionha_sessionstore_memcached_evictions_total") > 0
        assert metric(metrics, "sessionha_sessionstore_nodes_evicting") == 1
        # One log line per change of the count, not per poll: once the owner has read the
        # latest count, more polls of it add nothing.
        evicted = await memcached_stat(n2, "evictions")
        while (await get_json(http, app1.url("/health")))["nodes"][1]["evictions"] != evicted:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        warnings = app1.log_text().count("memcached node n2 evicted")
        await asyncio.sleep(5 * float(POLL))
        assert await memcached_stat(n2, "evictions") == evicted
        assert app1.log_text().count("memcached node n2 evicted") == warnings >= 1

        app1.process.kill()  # SIGKILL: the owner's memory is gone
        app1.process.wait(timeout=10)
        for session_id, data in sessions.items():
            view = await get_json(http, app2.url("/test"),
                                  headers={"Cookie": f"JSESSIONID={session_id}"})
            assert view["server"] == "app2" and view["new"] is False
            assert view["attributes"] == {"data": data}
