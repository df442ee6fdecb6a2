"""`python -m proxy` with an ssl listener, as a real process: SIGHUP swaps the certificate
for new connections while an open keep-alive connection keeps working, a broken one on
SIGHUP leaves the old one in use with one clear log line, and TLS settings a process
cannot use end it with one line and exit status 2."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.proxy.support import RawUpstream, read_response
from tests.support.certificates import (
    TestCertificateAuthority,
    broken_certificate,
    install,
)
from tests.support.ports import free_port, wait_for_port

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 5.0  # every client operation
RELOADED = "TLS certificate reloaded"
FAILED = "TLS certificate reload failed"


@pytest.fixture
async def upstream() -> AsyncIterator[RawUpstream]:
    server = await RawUpstream("app1").start()
    yield server
    await server.stop()


def proxy_env(**settings: str) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "PYTHONDONTWRITEBYTECODE": "1"} | {
        key.upper(): value for key, value in settings.items()
    }


class ProxyProcess:
    """`python -m proxy` from environment settings, its stderr in a file."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "proxy"],
                cwd=REPO,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    async def wait_for_line(self, tag: str, *, count: int = 1) -> None:
        """Until the log holds `count` lines with `tag` (bounded)."""
        deadline = time.monotonic() + TIMEOUT
        while self.text().count(tag) < count:
            assert self.process.poll() is None, self.text()
            assert time.monotonic() < deadline, f"no {tag!r} line:\n{self.text()}"
            await asyncio.sleep(0.02)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@pytest.fixture
def live_dir(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "live"
    directory.mkdir()
    yield directory


async def serial_and_answer(
    port: int, ca: TestCertificateAuthority
) -> tuple[int, asyncio.StreamReader, asyncio.StreamWriter]:
    """A new TLS connection: the serial of the certificate it was shown, and the streams."""
    async with asyncio.timeout(TIMEOUT):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ca.client_context(), server_hostname="localhost"
        )
    ssl_object = writer.get_extra_info("ssl_object")
    assert isinstance(ssl_object, ssl.SSLObject)
    peer = ssl_object.getpeercert()
    assert peer is not None
    return int(str(peer["serialNumber"]), 16), reader, writer


async def keep_alive_get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
    async with asyncio.timeout(TIMEOUT):
        writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        return (await read_response(reader)).status


async def test_sighup_swaps_the_certificate_and_a_broken_one_keeps_the_old(
    upstream: RawUpstream, ca: TestCertificateAuthority, live_dir: Path, tmp_path: Path
) -> None:
    first, second = ca.issue("first"), ca.issue("second")
    certificate, key = live_dir / "proxy.pem", live_dir / "proxy.key"
    install(first, certificate, key)
    plain, secure = free_port(), free_port()
    env = proxy_env(
        listen=f"127.0.0.1:{plain},127.0.0.1:{secure} ssl",
        upstreams=f"app1=127.0.0.1:{upstream.port}",
        health_interval="0",
        ssl_certificate=str(certificate),
        ssl_certificate_key=str(key),
    )
    proxy = ProxyProcess(env, tmp_path / "proxy.log")
    try:
        await asyncio.to_thread(wait_for_port, "127.0.0.1", secure)
        await proxy.wait_for_line("proxy listening on")
        assert f"proxy listening on 127.0.0.1:{plain}, 127.0.0.1:{secure} ssl," in proxy.text()
        serial, reader, writer = await serial_and_answer(secure, ca)
        assert serial == first.serial
        assert await keep_alive_get(reader, writer) == 200

        install(second, certificate, key)
        proxy.process.send_signal(signal.SIGHUP)
        await proxy.wait_for_line(RELOADED)
        new_serial, new_reader, new_writer = await serial_and_answer(secure, ca)
        assert new_serial == second.serial
        assert await keep_alive_get(new_reader, new_writer) == 200
        new_writer.close()
        # The connection opened before the reload still works, on its first certificate.
        assert await keep_alive_get(reader, writer) == 200

        install(broken_certificate(tmp_path / "broken"), certificate, key)
        proxy.process.send_signal(signal.SIGHUP)
        await proxy.wait_for_line(FAILED)
        failed = [line for line in proxy.text().splitlines() if FAILED in line]
        assert len(failed) == 1 and str(certificate) in failed[0]
        assert "Traceback" not in proxy.text()
        still_serial, _, still_writer = await serial_and_answer(secure, ca)
        assert still_serial == second.serial
        still_writer.close()
        assert await keep_alive_get(reader, writer) == 200
        writer.close()
    finally:
        proxy.stop()
    assert proxy.process.returncode == 0, proxy.text()


@pytest.mark.parametrize(
    ("settings", "line"),
    [
        (
            {"listen": "127.0.0.1:0 ssl"},
            "proxy: bad proxy setting ssl_certificate='': required by listen 127.0.0.1:0 ssl",
        ),
        (
            {"listen": "127.0.0.1:0,127.0.0.1:0 tls"},
            "proxy: bad proxy setting listen='127.0.0.1:0,127.0.0.1:0 tls': entry "
            "'127.0.0.1:0 tls': the only option after host:port is ssl",
        ),
        (
            {
                "listen": "127.0.0.1:0 ssl",
                "ssl_certificate": "/nonexistent/proxy.pem",
                "ssl_certificate_key": "/nonexistent/proxy.key",
            },
            "proxy: ssl_certificate /nonexistent/proxy.pem: no such file",
        ),
        (
            {"redirect_to_https": "yes"},
            "proxy: bad proxy setting redirect_to_https='yes': needs a listen entry with ssl",
        ),
    ],
)
def test_tls_settings_a_process_cannot_use_end_it_with_one_line(
    settings: dict[str, str], line: str
) -> None:
    env = proxy_env(upstreams="app1=127.0.0.1:1", **settings)
    result = subprocess.run(
        [sys.executable, "-m", "proxy"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [line]
