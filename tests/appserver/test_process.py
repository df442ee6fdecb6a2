"""`python -m appserver` as a real process: settings, start line, SIGTERM, take-over."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from tests.support.memcached import MemcachedProcess
from tests.support.ports import free_port, wait_for_port

from .processes import AppServerProcess, run_appserver

JSON = {"Accept": "application/json"}


def run_to_exit(env: dict[str, str], *args: str, tmp_path: Path) -> tuple[int, str]:
    log = tmp_path / "failed.log"
    process = run_appserver(env, *args, log=log)
    return process.wait(timeout=30), log.read_text()


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"JVM_ROUTE": "app1", "MEMCACHED_NODES": "n1:127.0.0.1:11211"}, "listen"),
        ({"LISTEN": "127.0.0.1:1", "JVM_ROUTE": "app1"}, "memcached_nodes"),
        (
            {
                "LISTEN": "127.0.0.1:1",
                "JVM_ROUTE": "app1",
                "MEMCACHED_NODES": "n1:127.0.0.1:11211",
                "OPERATION_TIMEOUT": "soon",
            },
            "operation_timeout",
        ),
    ],
)
def test_a_bad_setting_stops_start_up_with_one_line(
    env: dict[str, str], named: str, tmp_path: Path
) -> None:
    code, stderr = run_to_exit(env, tmp_path=tmp_path)
    assert code == 2
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert stderr.startswith(f"appserver: bad setting: {named}")


def test_an_unknown_key_in_the_topology_is_named(tmp_path: Path) -> None:
    config = tmp_path / "cluster.toml"
    config.write_text(
        '[appserver]\nmemcached_nodes = "n1:127.0.0.1:11211"\n'
        '[appserver.app1]\nlisten = "127.0.0.1:1"\njvm_route = "app1"\nfailover_node = "n1"\n'
    )
    code, stderr = run_to_exit({}, "--config", str(config), "--name", "app1", tmp_path=tmp_path)
    assert code == 2
    assert stderr == (
        "appserver: bad setting: failover_node: is not a setting the app server knows\n"
    )


def test_start_from_the_topology_file_logs_one_line_and_stops_on_sigterm(
    tmp_path: Path, memcached: MemcachedProcess
) -> None:
    port = free_port()
    config = tmp_path / "cluster.toml"
    config.write_text(
        f'[appserver]\nmemcached_nodes = "n1:{memcached.address}"\n'
        f'[appserver.app1]\nlisten = "127.0.0.1:{port}"\nhost = "host1"\njvm_route = "app1"\n'
    )
    log = tmp_path / "app1.log"
    process = run_appserver({}, "--config", str(config), "--name", "app1", log=log)
    try:
        wait_for_port("127.0.0.1", port)
        assert f"appserver app1 listening on 127.0.0.1:{port}" in log.read_text()
        # garbage on the wire: a 400, and one log line instead of a traceback
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET /test?a=\xff HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.0 400")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    text = log.read_text()
    assert "appserver app1 stopped" in text
    assert "bad request from 127.0.0.1: 400 Invalid char in url query" in text
    assert "Traceback" not in text


async def test_sigterm_finishes_the_request_in_flight_then_exits(
    appserver_process: Callable[..., AppServerProcess], memcached: MemcachedProcess
) -> None:
    server = appserver_process("app1", memcached, SHUTDOWN_TIMEOUT="10")
    body = b"dataName=slow&dataValue=" + b"z" * 1000
    async with asyncio.timeout(20):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            b"POST /test HTTP/1.1\r\nHost: app1\r\nAccept: application/json\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body[:500]
        )
        await writer.drain()
        # A full round trip on another connection: the server has read our headers by now.
        async with aiohttp.ClientSession() as client, client.get(server.url("/health")) as health:
            assert health.status == 200

        server.process.send_signal(signal.SIGTERM)
        await refused(server.port)  # stopped accepting while our request is still open

        writer.write(body[500:])  # the rest of the slow body
        await writer.drain()
        status_line = await reader.readline()
        assert status_line.startswith(b"HTTP/1.1 200")
        _, _, rest = (await reader.read()).partition(b"\r\n\r\n")
        assert json.loads(rest)["attributes"] == {"slow": "z" * 1000}
        writer.close()
    assert server.process.wait(timeout=15) == 0


async def test_a_request_that_never_completes_does_not_hold_shutdown_past_its_bound(
    appserver_process: Callable[..., AppServerProcess], memcached: MemcachedProcess
) -> None:
    server = appserver_process("app1", memcached, SHUTDOWN_TIMEOUT="1")
    async with asyncio.timeout(20):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            b"POST /test HTTP/1.1\r\nHost: app1\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nda"
        )
        await writer.drain()
        async with aiohttp.ClientSession() as client, client.get(server.url("/health")) as health:
            assert health.status == 200
        server.process.send_signal(signal.SIGTERM)
        assert await reader.read() == b""  # dropped once the bound ran out
        writer.close()
    assert server.process.wait(timeout=10) == 0
    assert "1 requests still in flight" in server.log.read_text()


async def test_take_over_after_a_graceful_stop_with_asynchronous_backups(
    appserver_process: Callable[..., AppServerProcess],
    memcached_factory: Callable[..., MemcachedProcess],
) -> None:
    n1, n2 = memcached_factory(), memcached_factory()
    app1 = appserver_process("app1", n1, n2, FAILOVER_NODES="n1", SESSION_BACKUP_ASYNC="true")
    jar = aiohttp.CookieJar(unsafe=True)  # unsafe: keeps cookies of an IP address host
    async with aiohttp.ClientSession(headers=JSON, cookie_jar=jar) as client:
        async with client.post(app1.url("/test"), data={"dataName": "a", "dataValue": "1"}):
            pass
        async with client.post(app1.url("/test"), data={"dataName": "b", "dataValue": "2"}) as r:
            written = await r.json()
    assert app1.terminate_and_wait(timeout=15) == 0  # pending async backups were flushed

    app2 = appserver_process("app2", n1, n2, FAILOVER_NODES="n2")
    cookie = {"Cookie": f"JSESSIONID={written['session_id']}"}
    async with (
        aiohttp.ClientSession(headers=JSON | cookie) as client,
        client.get(app2.url("/test")) as response,
    ):
        body = await response.json()
    assert body["server"] == "app2"
    assert body["attributes"] == {"a": "1", "b": "2"}


async def refused(port: int) -> None:
    """Wait (bounded) until connecting to port is refused."""
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return
        writer.close()
        await asyncio.sleep(0.02)
    raise AssertionError(f"127.0.0.1:{port} still accepts connections")
