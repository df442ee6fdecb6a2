"""Durable acknowledgement: with session_backup_async = false, a 2xx means "in memcached".

The attacker's run: 600 concurrent POSTs to one ~1 MB sticky session; 380 answers went out
before their backup was written. Here, against `python -m appserver` as a real process and a
real memcached a few milliseconds away (as over a network), every 2xx answer's attribute must
be in the record memcached holds the moment the last answer arrived, and every other answer
is a 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp

from sessionstore.client import MemcachedClient
from sessionstore.codec import decode_record, transcoder_named
from tests.sessionstore.faulty_servers import DelayingProxy
from tests.support.memcached import MemcachedProcess

from .processes import AppServerProcess, metric

CONCURRENT_POSTS = 600
BLOB = "x" * 900_000  # with the posted entries, a session of ~0.9 MB
JSON = {"Accept": "application/json"}
NETWORK_DELAY = 0.02  # per memcached reply: one write of the session at a time is not enough


async def stored_attributes(server: MemcachedProcess, key: str) -> dict[str, object]:
    async with MemcachedClient(node="inspect", host=server.host, port=server.port,
                               operation_timeout=2.0, pool_size=1) as client:
        data = await client.get(key.encode())
    assert data is not None, f"{key} is not in memcached"
    record = decode_record(data)
    return dict(transcoder_named(record.transcoder).decode(record.attributes_bytes))


async def test_every_2xx_of_concurrent_posts_to_a_large_session_is_in_memcached(
    appserver_process: Callable[..., AppServerProcess], memcached: MemcachedProcess
) -> None:
    with DelayingProxy(memcached.port) as network:
        network.reply_delay = NETWORK_DELAY
        server = appserver_process("app1", MEMCACHED_NODES=f"n1:{network.address}")
        await concurrent_posts_to_one_session(server, memcached, print)
        async with aiohttp.ClientSession() as http, http.get(server.url("/metrics")) as page:
            metrics = await page.text()
        server.process.kill()  # before the proxy goes: the server's connections end with it
    # One write carried the changes of many requests: a handful of writes, not 600 in a row.
    assert metric(metrics, "sessionha_sessionstore_backups_written_total") <= CONCURRENT_POSTS / 10
    assert metric(metrics, "sessionha_sessionstore_backups_coalesced_total") >= CONCURRENT_POSTS / 2


async def concurrent_posts_to_one_session(
    server: AppServerProcess, memcached: MemcachedProcess, report: Callable[[str], None]
) -> None:
    connector = aiohttp.TCPConnector(limit=CONCURRENT_POSTS)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=30)) as http:
        async with http.post(server.url("/test"), headers=JSON,
                             data={"dataName": "blob", "dataValue": BLOB}) as first:
            assert first.status == 200
            session_id = (await first.json())["session_id"]
        headers = JSON | {"Cookie": f"JSESSIONID={session_id}"}

        async def post(number: int) -> tuple[int, int, str | None]:
            form = {"dataName": f"k{number}", "dataValue": f"v{number}"}
            async with http.post(server.url("/test"), data=form, headers=headers) as response:
                await response.read()
                return number, response.status, response.headers.get("Retry-After")

        started = time.monotonic()
        answers = await asyncio.gather(*(post(n) for n in range(CONCURRENT_POSTS)))
        elapsed = time.monotonic() - started
    # Read at once: an answer must not run ahead of its write, so nothing is flushed first.
    stored = await stored_attributes(memcached, session_id)

    acknowledged = [number for number, status, _ in answers if 200 <= status < 300]
    refused = [(status, retry) for _, status, retry in answers if not 200 <= status < 300]
    missing = [number for number in acknowledged if stored.get(f"k{number}") != f"v{number}"]
    report(f"\n{CONCURRENT_POSTS} POSTs in {elapsed:.1f}s: {len(acknowledged)} 2xx, "
           f"{len(refused)} refused, {len(missing)} 2xx not in memcached")
    assert missing == []
    assert all(status == 503 and retry is not None and retry.isdigit()
               for status, retry in refused), refused[:5]
    assert stored["blob"] == BLOB
    # How many are 2xx depends on how long this burst keeps the server's event loop busy
    # (each answer renders the whole ~1 MB session) against session_backup_timeout.
    assert acknowledged
