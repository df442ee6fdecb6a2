"""The memcached choke point against real memcached and against servers that misbehave."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import aiomcache
import pytest

from sessionstore.client import MemcachedClient
from sessionstore.errors import LoopStalledError, NodeFailureError, ServerReplyError
from tests.support.memcached import MemcachedProcess
from tests.support.ports import free_port

from .clients import memcached_client
from .faulty_servers import (
    CloseMidCommandServer,
    DelayingProxy,
    SilentServer,
    wait_until_forwarded,
)


async def test_operations_against_real_memcached(memcached: MemcachedProcess) -> None:
    async with memcached_client(memcached.port) as client:
        assert await client.get(b"k") is None
        assert await client.set(b"k", b"v\r\nwith crlf", 60)
        assert await client.get(b"k") == b"v\r\nwith crlf"
        assert not await client.add(b"k", b"other", 60)
        assert await client.add(b"fresh", b"1", 60)
        assert await client.touch(b"k", 120)
        assert not await client.touch(b"absent", 120)
        assert await client.delete(b"k")
        assert not await client.delete(b"k")
        assert (await client.version())[0].isdigit()
        stats = await client.stats()
        assert stats["evictions"] == "0" and int(stats["curr_items"]) == 1
        assert stats["version"] == await client.version()


async def test_large_values_cross_in_pieces_both_ways(memcached: MemcachedProcess) -> None:
    """A value far above one read and one socket buffer: written with flow control (drain),
    read back in many pieces, also with other replies in flight behind it."""
    value = bytes(range(256)) * 3500  # 896,000 bytes, CRLFs inside
    async with memcached_client(memcached.port, timeout=5.0) as client:
        assert await client.set(b"large", value, 60)
        assert await client.get(b"large") == value
        found = await asyncio.gather(*(client.get_with_ttl(b"large") for _ in range(8)),
                                     client.get(b"absent"))
        assert all(entry is not None and entry[0] == value for entry in found[:8])
        assert found[8] is None


async def test_error_reply_is_not_a_node_failure(memcached_factory: object) -> None:
    server = memcached_factory(item_size_limit="512k")  # type: ignore[operator]
    async with memcached_client(server.port) as client:
        with pytest.raises(ServerReplyError, match="SERVER_ERROR"):
            await client.set(b"big", b"x" * 600_000, 60)
        assert await client.set(b"small", b"ok", 60)  # the next operation is fine
        assert await client.get(b"small") == b"ok"


async def test_refused_connection_is_a_node_failure() -> None:
    async with memcached_client(free_port()) as client:
        with pytest.raises(NodeFailureError):
            await client.get(b"k")


async def test_bad_keys_never_reach_the_wire(memcached: MemcachedProcess) -> None:
    async with memcached_client(memcached.port) as client:
        for key in (b"", b"a b", b"a\r\nflush_all", b"x" * 251):
            with pytest.raises(ValueError, match="invalid memcached key"):
                await client.get(key)


async def test_silent_node_times_out_within_operation_timeout() -> None:
    with SilentServer() as silent:
        async with memcached_client(silent.port, timeout=0.3) as client:
            started = time.monotonic()
            with pytest.raises(NodeFailureError, match="no reply within"):
                await client.set(b"k", b"v", 60)
            assert time.monotonic() - started < 0.3 + 0.1
            assert b"set k 0 60 1" in silent.received


async def test_timed_out_connection_never_serves_a_stale_reply(
        memcached: MemcachedProcess) -> None:
    """Item 10: a reply that arrives after the timeout must not answer the next get."""
    async with memcached_client(memcached.port) as direct:
        await direct.set(b"session-a", b"data of a", 60)
        await direct.set(b"session-b", b"data of b", 60)
    with DelayingProxy(memcached.port) as proxy:
        # The hazard, reproduced with aiomcache 0.8.2 itself: the cancelled get's connection
        # goes back to the pool with "VALUE session-a ..." unread; the next get reads it.
        raw = aiomcache.Client("127.0.0.1", proxy.port, pool_size=1)
        try:
            assert await raw.get(b"session-b") == b"data of b"
            forwarded = proxy.replies_forwarded
            proxy.reply_delay = 0.3
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(raw.get(b"session-a"), 0.1)
            proxy.reply_delay = 0.0
            await wait_until_forwarded(proxy, forwarded + 1)
            await asyncio.sleep(0.05)  # the late reply now sits in the pooled connection
            assert await raw.get(b"session-b") is None  # a miss for a session that exists
        finally:
            await raw.close()

        # The choke point closes the timed-out connection: the next get is correct.
        async with memcached_client(proxy.port, timeout=0.1, pool_size=1) as client:
            assert await client.get(b"session-b") == b"data of b"
            forwarded = proxy.replies_forwarded
            proxy.reply_delay = 0.3
            with pytest.raises(NodeFailureError):
                await client.get(b"session-a")
            proxy.reply_delay = 0.0
            await wait_until_forwarded(proxy, forwarded + 1)
            await asyncio.sleep(0.05)
            assert await client.get(b"session-b") == b"data of b"
            assert await client.get(b"session-a") == b"data of a"


async def test_silent_node_times_out_stats_too() -> None:
    with SilentServer() as silent:
        async with memcached_client(silent.port, timeout=0.2) as client:
            started = time.monotonic()
            with pytest.raises(NodeFailureError, match="no reply within"):
                await client.stats()
            assert time.monotonic() - started < 0.2 + 0.1


async def test_timeout_while_the_event_loop_was_stalled_does_not_blame_the_node(
        memcached: MemcachedProcess) -> None:
    """A flood that hogs the loop makes every operation late; the node is not at fault."""
    async with memcached_client(memcached.port) as direct:
        await direct.set(b"k", b"value", 60)
    with DelayingProxy(memcached.port) as proxy:
        async with memcached_client(proxy.port, timeout=0.1, pool_size=1) as client:
            assert await client.get(b"k") == b"value"
            forwarded = proxy.replies_forwarded
            proxy.reply_delay = 0.05
            loop = asyncio.get_running_loop()
            loop.call_later(0.01, time.sleep, 0.3)  # the loop stalls past the whole budget
            with pytest.raises(LoopStalledError, match="event loop"):
                await client.get(b"missing")
            proxy.reply_delay = 0.0
            await wait_until_forwarded(proxy, forwarded + 1)
            await asyncio.sleep(0.05)  # its late reply must not answer the next get
            assert await client.get(b"k") == b"value"


async def value_of(client: MemcachedClient, command: str, key: bytes) -> bytes | None:
    """What `get`, or the meta get (`get_with_ttl`), finds under `key`."""
    if command == "get":
        return await client.get(key)
    found = await client.get_with_ttl(key)
    return None if found is None else found[0]


@pytest.mark.parametrize("command", ["get", "get_with_ttl"])
async def test_cancelled_operation_closes_its_connection(memcached: MemcachedProcess,
                                                         command: str) -> None:
    with DelayingProxy(memcached.port) as proxy:
        async with memcached_client(memcached.port) as direct:
            await direct.set(b"k", b"value", 60)
        async with memcached_client(proxy.port, timeout=2.0, pool_size=1) as client:
            forwarded = proxy.replies_forwarded
            proxy.reply_delay = 0.3
            task = asyncio.ensure_future(value_of(client, command, b"missing"))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            proxy.reply_delay = 0.0
            await wait_until_forwarded(proxy, forwarded + 1)
            await asyncio.sleep(0.05)
            assert await value_of(client, command, b"k") == b"value"


@pytest.mark.timeout(10, method="signal")
@pytest.mark.parametrize("command",
                         ["set", "add", "delete", "touch", "get", "get_with_ttl", "stats"])
async def test_server_closing_mid_command_never_freezes_the_loop(command: str) -> None:
    """aiomcache's reply loop spins on readline() == b'' forever; ours raises at EOF."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    with CloseMidCommandServer() as server:
        running = asyncio.ensure_future(ticker())
        try:
            async with memcached_client(server.port, timeout=2.0) as client:
                operation: Callable[[], Awaitable[object]] = {
                    "set": lambda: client.set(b"k", b"v", 60),
                    "add": lambda: client.add(b"k", b"v", 60),
                    "delete": lambda: client.delete(b"k"),
                    "touch": lambda: client.touch(b"k", 60),
                    "get": lambda: client.get(b"k"),
                    "get_with_ttl": lambda: client.get_with_ttl(b"k"),
                    "stats": lambda: client.stats(),
                }[command]
                started = time.monotonic()
                with pytest.raises(NodeFailureError, match="closed"):
                    await operation()
                assert time.monotonic() - started < 1.0  # EOF, not the 2 s timeout
            await asyncio.sleep(0.05)
            assert ticks > 1  # the loop kept running
        finally:
            running.cancel()


_RAW_AIOMCACHE_SET = """
import asyncio, sys, aiomcache
async def main():
    client = aiomcache.Client("127.0.0.1", int(sys.argv[1]))
    try:
        await asyncio.wait_for(client.set(b"k", b"v"), 0.5)
    except Exception:
        pass
    print("returned", flush=True)
asyncio.run(main())
"""


def test_raw_aiomcache_freezes_on_close_mid_command() -> None:
    """The trap being guarded against is real: aiomcache 0.8.2 spins and even its 0.5 s
    asyncio timeout cannot fire (the process is killed after 1.5 s)."""
    with CloseMidCommandServer() as server:
        process = subprocess.Popen([sys.executable, "-c", _RAW_AIOMCACHE_SET, str(server.port)],
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            with pytest.raises(subprocess.TimeoutExpired):
                process.communicate(timeout=1.5)
        finally:
            process.kill()
            process.communicate(timeout=5)
