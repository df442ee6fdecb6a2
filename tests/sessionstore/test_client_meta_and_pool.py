"""The choke point's additions of issue 17, against real memcached and misbehaving servers:
the meta get (value and TTL in one round trip) keeps every trap guard of the classic
commands, and so does pipelining (many operations in flight on one connection): a failure
fails everything still waiting on the connection, a cancel leaves the others in step, and no
operation starves waiting for a connection."""

from __future__ import annotations

import asyncio
import time

import pytest

from sessionstore.errors import NodeFailureError
from tests.support.memcached import MemcachedProcess

from .clients import memcached_client
from .faulty_servers import (
    CloseMidCommandServer,
    DelayingProxy,
    SilentServer,
    WrongReplyServer,
    wait_until_forwarded,
)


async def test_meta_get_returns_the_value_and_its_time_to_live(
        memcached: MemcachedProcess) -> None:
    async with memcached_client(memcached.port) as client:
        assert await client.get_with_ttl(b"absent") is None
        assert await client.set(b"k", b"v\r\nEN\r\nwith crlf", 120)
        value, ttl = await client.get_with_ttl(b"k") or (b"", 0)
        assert value == b"v\r\nEN\r\nwith crlf" and 118 <= ttl <= 120
        assert await client.set(b"forever", b"", 0)
        assert await client.get_with_ttl(b"forever") == (b"", -1)
        assert await client.get(b"k") == b"v\r\nEN\r\nwith crlf"  # the connection is in step


async def test_timed_out_meta_get_never_serves_a_stale_reply(
        memcached: MemcachedProcess) -> None:
    async with memcached_client(memcached.port) as direct:
        await direct.set(b"session-a", b"data of a", 60)
        await direct.set(b"session-b", b"data of b", 60)
    with DelayingProxy(memcached.port) as proxy:
        async with memcached_client(proxy.port, timeout=0.1, pool_size=1) as client:
            assert (await client.get_with_ttl(b"session-b") or (b"",))[0] == b"data of b"
            forwarded = proxy.replies_forwarded
            proxy.reply_delay = 0.3
            with pytest.raises(NodeFailureError, match="no reply within"):
                await client.get_with_ttl(b"session-a")
            proxy.reply_delay = 0.0
            await wait_until_forwarded(proxy, forwarded + 1)
            await asyncio.sleep(0.05)  # the late reply reached the discarded connection
            assert (await client.get_with_ttl(b"session-b") or (b"",))[0] == b"data of b"


async def test_a_meta_reply_for_another_key_discards_the_connection() -> None:
    with WrongReplyServer(b"VA 1 t10 kother\r\nx\r\n") as server:
        async with memcached_client(server.port, pool_size=1) as client:
            with pytest.raises(NodeFailureError, match="asked for"):
                await client.get_with_ttl(b"mine")
            with pytest.raises(NodeFailureError, match="asked for"):
                await client.get_with_ttl(b"mine")  # a new connection, as wrong again


async def test_bytes_nobody_asked_for_discard_the_connection() -> None:
    """A second reply to one command: the connection is out of step, so it goes, and the
    next command gets a fresh one (where the stray reply would have answered it)."""
    with WrongReplyServer(b"STORED\r\nSTORED\r\n") as server:
        async with memcached_client(server.port, pool_size=1) as client:
            assert await client.set(b"k", b"v", 60)
            await asyncio.sleep(0.05)  # the stray STORED has arrived by now
            assert await client.set(b"k", b"v", 60)
            assert server.connections_accepted == 2


@pytest.mark.parametrize("reply", [b"VALUE k 0 " + b"9" * 3000, b"VALUE k 0 99999999999\r\n"],
                         ids=["endless line", "absurd length"])
async def test_a_reply_longer_than_any_fails_at_once(reply: bytes) -> None:
    """Neither a line without end nor an announced value of gigabytes is waited for (nor
    buffered): the operation fails as soon as the bytes show it, not at its timeout."""
    with WrongReplyServer(reply) as server:
        async with memcached_client(server.port, timeout=2.0, pool_size=1) as client:
            started = time.monotonic()
            with pytest.raises(NodeFailureError, match=r"longer than|bad value length"):
                await client.get(b"k")
            assert time.monotonic() - started < 1.0


async def test_killed_memcached_fails_operations_and_a_restarted_one_serves_again(
        memcached: MemcachedProcess) -> None:
    async with memcached_client(memcached.port, pool_size=2) as client:
        assert await client.set(b"k", b"v", 60)
        memcached.kill()
        with pytest.raises(NodeFailureError):
            await client.get_with_ttl(b"k")
        memcached.start()  # empty, on the same port
        for _ in range(3):  # whatever pooled connection was left is closed, not reused
            try:
                assert await client.get_with_ttl(b"k") is None
                break
            except NodeFailureError:
                await asyncio.sleep(0.05)
        assert await client.set(b"k", b"again", 60)
        assert (await client.get_with_ttl(b"k") or (b"",))[0] == b"again"


async def test_no_operation_starves_under_contention(memcached: MemcachedProcess) -> None:
    """40 callers looping for 1.5 s: none waits long (behind aiomcache's pool queue, which
    lets newcomers take a connection a waiter was woken for, some waited seconds, timed out,
    and a healthy node got marked dead)."""
    async with memcached_client(memcached.port, timeout=1.0, pool_size=1) as client:
        await client.set(b"k", b"v" * 200, 60)
        slowest = 0.0
        deadline = time.monotonic() + 1.5

        async def caller() -> None:
            nonlocal slowest
            while time.monotonic() < deadline:
                started = time.monotonic()
                assert await client.get_with_ttl(b"k") is not None
                slowest = max(slowest, time.monotonic() - started)

        await asyncio.gather(*(caller() for _ in range(40)))
        assert slowest < 0.5


async def test_operations_in_flight_on_a_silent_node_all_fail_within_the_timeout() -> None:
    """Ten operations pipelined on one connection to a node that never answers: the first
    timeout discards the connection and with it every operation still waiting on it."""
    with SilentServer() as silent:
        async with memcached_client(silent.port, timeout=0.3) as client:
            started = time.monotonic()
            outcomes = await asyncio.gather(
                *(client.get_with_ttl(b"k%d" % i) for i in range(10)), return_exceptions=True)
            assert time.monotonic() - started < 0.3 + 0.1
    assert [type(outcome) for outcome in outcomes] == [NodeFailureError] * 10
    assert b"mg k0 v t k\r\n" in silent.received and b"mg k9 v t k\r\n" in silent.received


@pytest.mark.timeout(10, method="signal")
async def test_server_closing_with_operations_in_flight_fails_them_all_at_once() -> None:
    with CloseMidCommandServer() as server:
        async with memcached_client(server.port, timeout=2.0) as client:
            started = time.monotonic()
            outcomes = await asyncio.gather(
                client.set(b"a", b"1", 60), client.get_with_ttl(b"b"), client.touch(b"c", 60),
                client.delete(b"d"), client.stats(), return_exceptions=True)
            assert time.monotonic() - started < 1.0  # EOF, not the 2 s timeout
    assert all(isinstance(outcome, NodeFailureError) for outcome in outcomes), outcomes
    assert "closed" in str(outcomes[0])


async def test_a_cancelled_operation_in_the_middle_leaves_the_others_their_replies(
        memcached: MemcachedProcess) -> None:
    async with memcached_client(memcached.port) as direct:
        for key in (b"a", b"b", b"c"):
            await direct.set(key, b"value of " + key, 60)
    with DelayingProxy(memcached.port) as proxy:
        async with memcached_client(proxy.port, timeout=2.0) as client:
            await client.get(b"a")  # connected
            proxy.reply_delay = 0.2
            first = asyncio.ensure_future(client.get_with_ttl(b"a"))
            middle = asyncio.ensure_future(client.get_with_ttl(b"b"))
            last = asyncio.ensure_future(client.get(b"c"))
            await asyncio.sleep(0.05)  # all three sent, no reply yet
            middle.cancel()
            assert (await first or (b"",))[0] == b"value of a"
            assert await last == b"value of c"
            with pytest.raises(asyncio.CancelledError):
                await middle
            proxy.reply_delay = 0.0
            assert await client.get(b"b") == b"value of b"  # b's reply answered nobody else
