"""`python -m appserver` as a real process for the tests, and raw HTTP exchanges with it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.memcached import MemcachedProcess
from tests.support.ports import free_port, wait_for_port

REPO = Path(__file__).parents[2]
# What new_session() stores.
KEPT = {"kept": "yes"}


@dataclass
class AppServerProcess:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def terminate_and_wait(self, timeout: float) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def log_text(self) -> str:
        return self.log.read_bytes().decode(errors="backslashreplace")

    def log_size(self) -> int:
        return self.log.stat().st_size

    def log_until(self, tag: str, *, since: int = 0, timeout: float = 5.0) -> str:
        """The log from byte `since` through the first line containing `tag`, waiting
        (bounded) until that line is written: an access log line follows its response, so it
        may land just after the client has read the answer."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log.read_bytes()[since:].decode(errors="backslashreplace")
            at = text.find(tag)
            if at >= 0:
                end = text.find("\n", at)
                return text if end < 0 else text[: end + 1]
            if time.monotonic() > deadline:
                raise AssertionError(f"no log line with {tag!r} after {timeout}s:\n{text}")
            time.sleep(0.01)


def run_appserver(env: dict[str, str], *args: str, log: Path) -> subprocess.Popen[bytes]:
    base = {"PATH": os.environ["PATH"], "PYTHONDONTWRITEBYTECODE": "1"}
    with log.open("wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "appserver", *args],
            cwd=REPO,
            env=base | env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def start_appserver(
    route: str, *memcached: MemcachedProcess, log_dir: Path, **env: str
) -> AppServerProcess:
    """`python -m appserver` from environment settings on a free port, once it accepts."""
    port = free_port()
    nodes = ",".join(f"n{i}:{m.address}" for i, m in enumerate(memcached, start=1))
    log = log_dir / f"{route}-{port}.log"
    process = run_appserver(
        {"LISTEN": f"127.0.0.1:{port}", "JVM_ROUTE": route, "MEMCACHED_NODES": nodes} | env,
        log=log,
    )
    try:
        wait_for_port("127.0.0.1", port)
    except TimeoutError:
        stop_process(process)
        raise
    return AppServerProcess(process, port, log)


def appserver_with_memcached(log_dir: Path, **env: str) -> Iterator[AppServerProcess]:
    """app1 with a memcached of its own (node n1), both stopped when the generator ends:
    the body of a fixture that yields from it."""
    memcached = MemcachedProcess().start()
    try:
        server = start_appserver("app1", memcached, log_dir=log_dir, **env)
        try:
            yield server
        finally:
            stop_process(server.process)
    finally:
        memcached.kill()


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(timeout=10)


@dataclass(frozen=True)
class RawResponse:
    status: int
    head: bytes
    body: bytes


async def exchange(port: int, raw: bytes) -> RawResponse:
    """Send `raw` byte for byte on a new connection; read the answer until the server
    closes (requests say `Connection: close`), within 10 s."""
    async with asyncio.timeout(10):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(raw)
            await writer.drain()
            data = await reader.read()
        finally:
            writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line = head.partition(b"\r\n")[0]
    assert status_line.startswith(b"HTTP/1."), data[:200]
    return RawResponse(int(status_line.split()[1]), head, body)


def request(
    path: str, tag: str, *, method: str = "GET", headers: dict[str, bytes] | None = None,
    body: bytes = b""
) -> bytes:
    """A request tagged `tag` through its User-Agent, which the access log shows."""
    head = [f"{method} {path} HTTP/1.1".encode(), b"Host: app1", b"Connection: close",
            b"Accept: application/json", f"User-Agent: {tag}".encode()]
    head += [name.encode() + b": " + value for name, value in (headers or {}).items()]
    if body or method == "POST":
        head.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(head) + b"\r\n\r\n" + body


async def new_session(server: AppServerProcess, tag: str) -> str:
    """A session holding kept=yes; its JSESSIONID."""
    response = await exchange(
        server.port, request("/test?dataName=kept&dataValue=yes", f"{tag}-setup")
    )
    assert response.status == 200
    cookie = re.search(rb"Set-Cookie: JSESSIONID=([^;]+)", response.head)
    assert cookie is not None
    return cookie.group(1).decode()


async def attributes(server: AppServerProcess, tag: str, session_id: str) -> dict[str, Any]:
    response = await exchange(
        server.port,
        request("/test", f"{tag}-check", headers={"Cookie": f"JSESSIONID={session_id}".encode()}),
    )
    assert response.status == 200
    view = json.loads(response.body)
    assert view["session_id"] == session_id  # the same session, not a fresh one
    return dict(view["attributes"])


def metric(text: str, name: str) -> float:
    """One un-labelled sample of a Prometheus text page."""
    for line in text.splitlines():
        sample, _, value = line.partition(" ")
        if sample == name:
            return float(value)
    raise KeyError(name)
