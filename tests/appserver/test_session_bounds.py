"""Bounds on sessions: what a flood of new sessions may cost (memory, memcached, other users).

The attacker's run: 104,559 cookie-less GETs in 19 s created 104,559 sessions, each held in
memory and written to memcached. Now a session without data costs memcached nothing, the
sessions in memory are capped (the least recently used are pushed out: they load back from
memcached), and new sessions per client address are rate limited.
"""

from __future__ import annotations

import asyncio

import aiohttp

from appserver import AppServerSettings
from tests.support.memcached import MemcachedProcess

from .apps import AppClient, Client
from .memcached_stats import command_counts

JSON = {"Accept": "application/json"}


async def stat(server: MemcachedProcess, name: str) -> int:
    async with asyncio.timeout(5):
        reader, writer = await asyncio.open_connection(server.host, server.port)
        try:
            writer.write(b"stats\r\n")
            while (line := await reader.readline()) not in (b"END\r\n", b""):
                _, key, value = line.decode().split()
                if key == name:
                    return int(value)
        finally:
            writer.close()
            await writer.wait_closed()
    raise KeyError(name)


def cookieless(client: Client) -> aiohttp.ClientSession:
    """A browser that never keeps a cookie: every request asks for a new session."""
    return aiohttp.ClientSession(base_url=client.make_url(""),
                                 cookie_jar=aiohttp.DummyCookieJar(), headers=JSON)


async def health(client: Client) -> dict[str, object]:
    body: dict[str, object] = await (await client.get("/health")).json()
    return body


async def test_sessions_without_data_cost_memcached_nothing(
    app_client: AppClient, memcached: MemcachedProcess
) -> None:
    client = await app_client(memcached, session_create_rate=0)
    async with cookieless(client) as browser:
        ids = []
        for _ in range(1000):
            async with browser.get("/test") as response:
                assert response.status == 200 and "JSESSIONID" in response.cookies
                ids.append((await response.json())["session_id"])
    assert len(set(ids)) == 1000
    assert await command_counts(memcached) == {
        "cmd_get": 0, "cmd_set": 0, "cmd_touch": 0, "delete_hits": 0, "delete_misses": 0}
    assert await stat(memcached, "curr_items") == 0

    # The first time one of them carries data, it is written, under the id it already has.
    async with client.post("/test", data={"dataName": "a", "dataValue": "1"},
                           headers=JSON | {"Cookie": f"JSESSIONID={ids[0]}"}) as response:
        body = await response.json()
        assert body["session_id"] == ids[0] and "JSESSIONID" not in response.cookies
    assert await stat(memcached, "curr_items") == 1


async def test_memory_cap_pushes_out_the_least_recently_used_and_they_load_back(
    app_client: AppClient, memcached: MemcachedProcess
) -> None:
    client = await app_client(memcached, max_active_sessions=20, session_create_rate=0)
    users = []
    async with cookieless(client) as browser:
        for number in range(10):
            form = {"dataName": "user", "dataValue": str(number)}
            async with browser.post("/test", data=form) as response:
                users.append((await response.json())["session_id"])
        empty = []
        for _ in range(100):  # a flood of new sessions pushes every user out of memory
            async with browser.get("/test") as response:
                empty.append((await response.json())["session_id"])
        bounds = await health(client)
        assert bounds["sessions_in_memory"] == 20 and bounds["max_active_sessions"] == 20

        for number, session_id in enumerate(users):
            cookie = {"Cookie": f"JSESSIONID={session_id}"}
            async with browser.get("/test", headers=cookie) as response:
                body = await response.json()
            assert body["session_id"] == session_id and body["new"] is False
            assert body["attributes"] == {"user": str(number)}
        assert (await health(client))["sessions_in_memory"] == 20

        # A data-less session pushed out was never stored: its id is not adopted again.
        async with browser.get("/test", headers={"Cookie": f"JSESSIONID={empty[0]}"}) as response:
            body = await response.json()
        assert body["new"] is True and body["session_id"] != empty[0]


async def test_new_sessions_with_data_are_rate_limited_per_client_address(
    app_client: AppClient, memcached: MemcachedProcess
) -> None:
    client = await app_client(memcached, session_create_rate=0.5, session_create_burst=3)
    first_client = {"X-Real-IP": "203.0.113.7"}  # the test client connects from 127.0.0.1,
    other_client = {"X-Real-IP": "203.0.113.8"}  # a trusted proxy: its X-Real-IP counts
    form = {"dataName": "a", "dataValue": "1"}
    async with cookieless(client) as browser:
        kept = []
        for _ in range(3):
            async with browser.post("/test", data=form, headers=first_client) as response:
                assert response.status == 200
                kept.append((await response.json())["session_id"])
        for _ in range(20):  # sessions without data cost nothing: never refused
            async with browser.get("/test", headers=first_client) as response:
                assert response.status == 200
        sets = (await command_counts(memcached))["cmd_set"]
        async with browser.post("/test", data=form, headers=first_client) as response:
            assert response.status == 429
            assert response.headers["Retry-After"] == "2"  # one token at 0.5 per second
            assert "JSESSIONID" not in response.cookies
            assert (await response.text()).startswith("too many new sessions from 203.0.113.7")
        forwarded = {"X-Forwarded-For": "198.51.100.1, 203.0.113.7"}  # last entry: the client
        async with browser.post("/test", data=form, headers=forwarded) as response:
            assert response.status == 429
        assert (await command_counts(memcached))["cmd_set"] == sets  # nothing stored

        async with browser.post("/test", data=form, headers=other_client) as response:
            assert response.status == 200
        cookie = {"Cookie": f"JSESSIONID={kept[0]}"}  # a client's existing session still works
        more = {"dataName": "b", "dataValue": "2"}
        async with browser.post("/test", data=more, headers=first_client | cookie) as response:
            assert response.status == 200
        # A header that is not one address names nobody: these count against the peer itself
        # (127.0.0.1: 3 tokens, then none).
        statuses = []
        for garbage in ("not an address", "203.0.113.7, 203.0.113.9", "\u00e9" * 40, ""):
            async with browser.post("/test", data=form, headers={"X-Real-IP": garbage}) as r:
                statuses.append(r.status)
        assert statuses == [200, 200, 200, 429]


async def test_headers_of_an_untrusted_peer_do_not_name_the_client(
    app_client: AppClient, memcached: MemcachedProcess
) -> None:
    client = await app_client(memcached, session_create_rate=0.5, session_create_burst=2,
                              trusted_proxies="none")
    form = {"dataName": "a", "dataValue": "1"}
    async with cookieless(client) as browser:
        statuses = []
        for number in range(4):
            spoofed = {"X-Real-IP": f"203.0.113.{number}", "X-Forwarded-For": f"10.1.1.{number}"}
            async with browser.post("/test", data=form, headers=spoofed) as response:
                statuses.append(response.status)
    assert statuses == [200, 200, 429, 429]


async def test_one_client_flooding_new_sessions_with_data_is_held_to_the_default_burst(
    app_client: AppClient, memcached: MemcachedProcess
) -> None:
    client = await app_client(memcached)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with cookieless(client) as browser:

        async def post(number: int) -> int:
            form = {"dataName": "flood", "dataValue": f"{number:0500d}"}
            async with browser.post("/test", data=form) as response:
                await response.read()
                return response.status

        statuses = await asyncio.gather(*(post(n) for n in range(400)))
    elapsed = loop.time() - started
    created = statuses.count(200)
    assert set(statuses) == {200, 429}
    assert created <= 100 + 20 * elapsed + 1  # session_create_burst + rate x time
    assert await stat(memcached, "curr_items") == created
    print(f"\n400 new sessions with data in {elapsed:.2f}s: {created} stored, "
          f"{statuses.count(429)} refused with 429")


def test_the_bounds_come_from_the_environment_too() -> None:
    settings = AppServerSettings.from_environ({
        "LISTEN": "127.0.0.1:0", "JVM_ROUTE": "app1", "MEMCACHED_NODES": "n1:127.0.0.1:11211",
        "MAX_ACTIVE_SESSIONS": "-1", "SESSION_CREATE_RATE": "2.5", "SESSION_CREATE_BURST": "7",
        "TRUSTED_PROXIES": "none",
    }).session
    assert settings.max_sessions_in_memory is None
    assert (settings.session_create_rate, settings.session_create_burst) == (2.5, 7)
    assert settings.trusted_networks == ()
