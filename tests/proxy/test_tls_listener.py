"""The TLS edge on its own: real handshakes over loopback against a TlsListener in front
of a tiny HTTP-ish protocol, on asyncio's event loop and on uvloop (the production one).
Certificates are made per module: a root, an intermediate, server certificates."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from socket import AF_INET, AF_INET6
from typing import Any, TypeVar, cast

import pytest
import uvloop

from proxy.errors import SettingsError, TlsError
from proxy.tls import CertificateStore, offered_alpn, protocol_range, server_context
from proxy.tls_listener import TlsListener
from tests.support.certificates import (
    ServerCertificate,
    TestCertificateAuthority,
    broken_certificate,
    install,
)

T = TypeVar("T")
Run = Callable[[Coroutine[Any, Any, T]], T]
ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 3.0  # every client operation: a hang fails the test, it never stalls the run
HELLO_TIMEOUT = 0.4
PLAIN_ANSWER = b"The plain HTTP request was sent to HTTPS port"
HELLO_V4 = b"hello tls=yes 127.0.0.1>127.0.0.1"


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Iterator[Run[Any]]:
    """Runs a test's coroutine on a fresh event loop of each kind."""
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        yield runner.run


@pytest.fixture(scope="module")
def first(ca: TestCertificateAuthority) -> ServerCertificate:
    return ca.issue("first")


@pytest.fixture(scope="module")
def second(ca: TestCertificateAuthority) -> ServerCertificate:
    return ca.issue("second")


class Hello(asyncio.Protocol):
    """Answers every request head with 200 and a body that tells what the transport said of
    itself, using the transport calls the proxy's client protocol makes."""

    def __init__(self, opened: list[Hello]) -> None:
        self.opened = opened
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TLS transport is no asyncio.Transport subclass, though it acts as one.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=65536)
        self.opened.append(self)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            _head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            tls = self.transport.get_extra_info("ssl_object") is not None
            peer = self.transport.get_extra_info("peername")[0]
            local = self.transport.get_extra_info("sockname")[0]
            body = f"hello tls={'yes' if tls else 'no'} {peer}>{local}".encode()
            head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
            self.transport.writelines((head, body))


def store_of(pair: ServerCertificate) -> CertificateStore:
    return CertificateStore(str(pair.certificate), str(pair.key))


@asynccontextmanager
async def serving(
    store: CertificateStore,
    host: str | None = "127.0.0.1",
    *,
    hello_timeout: float = HELLO_TIMEOUT,
    handshake_timeout: float = 2.0,
    deferred_accept: bool = False,
) -> AsyncIterator[tuple[TlsListener, list[Hello]]]:
    """A listener on a free port and the protocols it opened; closed, with every connection
    it handed over, when the block ends."""
    opened: list[Hello] = []
    listener = await TlsListener.start(
        host,
        0,
        lambda: Hello(opened),
        store,
        hello_timeout=hello_timeout,
        handshake_timeout=handshake_timeout,
        deferred_accept=deferred_accept,
    )
    try:
        yield listener, opened
    finally:
        listener.close()
        await asyncio.wait_for(listener.wait_closed(), TIMEOUT)
        for protocol in opened:
            if protocol.transport is not None:
                protocol.transport.abort()
        await asyncio.sleep(0)


def client(ca: TestCertificateAuthority, *alpn: str) -> ssl.SSLContext:
    context = ca.client_context()
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


async def connect(
    port: int, context: ssl.SSLContext, host: str = "127.0.0.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=context, server_hostname="localhost"), TIMEOUT
    )


async def request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """One request on an open connection: the body of the answer."""
    writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n"), head
    length = int(head.lower().partition(b"content-length: ")[2].partition(b"\r\n")[0])
    return await asyncio.wait_for(reader.readexactly(length), TIMEOUT)


def serial(writer: asyncio.StreamWriter) -> int:
    return int(writer.get_extra_info("peercert")["serialNumber"], 16)


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    await asyncio.wait_for(writer.wait_closed(), TIMEOUT)


async def raw(
    port: int, host: str = "127.0.0.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection(host, port), TIMEOUT)


async def read_all(reader: asyncio.StreamReader, within: float = TIMEOUT) -> bytes:
    """Everything until the server closes; fails if it does not close within `within`."""
    return await asyncio.wait_for(reader.read(), within)


def client_hello(context: ssl.SSLContext) -> bytes:
    """The first flight a client context sends, made in memory."""
    tls = context.wrap_bio(
        ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(), server_hostname="localhost"
    )
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


@pytest.mark.parametrize("deferred_accept", [False, True], ids=["accept", "deferred accept"])
def test_a_handshake_and_a_request_negotiate_http11(
    run: Run[None], ca: TestCertificateAuthority, first: ServerCertificate, deferred_accept: bool
) -> None:
    async def journey() -> None:
        store = store_of(first)
        async with serving(store, deferred_accept=deferred_accept) as (listener, _):
            # The client trusts the root only: the intermediate came from the chain file.
            reader, writer = await connect(listener.port, client(ca, "h2", "http/1.1"))
            assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "http/1.1"
            assert serial(writer) == first.serial
            assert await request(reader, writer) == HELLO_V4
            assert await request(reader, writer) == HELLO_V4  # keep-alive
            await close(writer)
            # A client that offers no ALPN at all is served too.
            reader, writer = await connect(listener.port, client(ca))
            assert writer.get_extra_info("ssl_object").selected_alpn_protocol() is None
            assert await request(reader, writer) == HELLO_V4
            await close(writer)

    run(journey())


def test_ipv6_and_all_interfaces_on_one_free_port(
    run: Run[None], ca: TestCertificateAuthority, first: ServerCertificate
) -> None:
    async def journey() -> None:
        store = store_of(first)
        async with serving(store, host="::1") as (listener, _):
            reader, writer = await connect(listener.port, client(ca), host="::1")
            assert await request(reader, writer) == b"hello tls=yes ::1>::1"
            await close(writer)
        async with serving(store, host=None) as (listener, _):  # 0.0.0.0 and ::, as nginx's *
            assert {sock.getsockname()[1] for sock in listener.sockets} == {listener.port}
            assert {sock.family for sock in listener.sockets} == {AF_INET, AF_INET6}
            for host in ("127.0.0.1", "::1"):
                reader, writer = await connect(listener.port, client(ca), host=host)
                assert await request(reader, writer) == f"hello tls=yes {host}>{host}".encode()
                await close(writer)

    run(journey())


def test_a_client_offering_only_h2_gets_a_handshake_failure(
    run: Run[None], ca: TestCertificateAuthority, first: ServerCertificate
) -> None:
    async def journey() -> None:
        async with serving(store_of(first)) as (listener, opened):
            started = time.monotonic()
            with pytest.raises(ssl.SSLError, match="no application protocol"):
                await connect(listener.port, client(ca, "h2"))
            assert time.monotonic() - started < 1.0
            assert opened == []

    run(journey())


@pytest.mark.parametrize("deferred_accept", [False, True], ids=["accept", "deferred accept"])
def test_plain_http_to_the_ssl_port_gets_a_400_and_is_closed_within_a_second(
    run: Run[None], first: ServerCertificate, deferred_accept: bool
) -> None:
    async def journey() -> None:
        store = store_of(first)
        async with serving(store, deferred_accept=deferred_accept) as (listener, opened):
            started = time.monotonic()
            reader, writer = await raw(listener.port)
            writer.write(b"POST /login HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nabc")
            answer = await read_all(reader, within=1.0)
            assert time.monotonic() - started < 1.0
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
            assert b"\r\nConnection: close" in head
            assert b"\r\nContent-Length: %d" % len(body) in head
            assert PLAIN_ANSWER in body
            assert opened == []  # nothing of it reached a protocol
            await close(writer)

    run(journey())


def test_a_silent_client_is_closed_at_the_deadline(
    run: Run[None], first: ServerCertificate
) -> None:
    async def journey() -> None:
        async with serving(store_of(first)) as (listener, _):
            started = time.monotonic()
            reader, writer = await raw(listener.port)
            assert await read_all(reader) == b""
            assert HELLO_TIMEOUT * 0.8 < time.monotonic() - started < HELLO_TIMEOUT + 1.0
            await close(writer)

    run(journey())


def test_half_a_client_hello_then_silence_is_closed_at_the_deadline(
    run: Run[None], ca: TestCertificateAuthority, first: ServerCertificate
) -> None:
    async def journey() -> None:
        async with serving(store_of(first)) as (listener, opened):
            hello = client_hello(client(ca))
            half = hello[: len(hello) // 2]
            # Stuck in the record header, in the body, and in the body with the client's FIN.
            for part, then_eof in ((hello[:3], False), (half, False), (half, True)):
                started, cpu = time.monotonic(), time.process_time()
                reader, writer = await raw(listener.port)
                writer.write(part)
                if then_eof:
                    writer.write_eof()
                assert await read_all(reader) == b""
                assert HELLO_TIMEOUT * 0.8 < time.monotonic() - started < HELLO_TIMEOUT + 1.0
                # Waiting for the rest of the record does not spin the loop.
                assert time.process_time() - cpu < HELLO_TIMEOUT / 4
                await close(writer)
            assert opened == []

    run(journey())


def test_a_client_hello_in_pieces_is_waited_for_and_served(
    run: Run[None], ca: TestCertificateAuthority, first: ServerCertificate
) -> None:
    """The first record arrives in three segments; the handshake then runs in memory."""

    async def journey() -> None:
        async with serving(store_of(first)) as (listener, _):
            reader, writer = await raw(listener.port)
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            tls = client(ca, "http/1.1").wrap_bio(incoming, outgoing, server_hostname="localhost")

            async def pump(step: Callable[[], object]) -> None:
                while True:
                    try:
                        step()
                        return
                    except ssl.SSLWantReadError:
                        writer.write(outgoing.read())
                        chunk = await asyncio.wait_for(reader.read(65536), TIMEOUT)
                        assert chunk, "the server closed during the handshake"
                        incoming.write(chunk)

            with pytest.raises(ssl.SSLWantReadError):
                tls.do_handshake()
            hello = outgoing.read()
            for piece in (hello[:2], hello[2:200], hello[200:]):
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0.05)
            chunk = await asyncio.wait_for(reader.read(65536), TIMEOUT)
            incoming.write(chunk)
            await pump(tls.do_handshake)
            assert tls.selected_alpn_protocol() == "http/1.1"
            writer.write(outgoing.read())  # the client's Finished
            tls.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            writer.write(outgoing.read())
            answer = b""
            while not answer.endswith(HELLO_V4):
                chunk = await asyncio.wait_for(reader.read(65536), TIMEOUT)
                assert chunk, answer
                incoming.write(chunk)
                with contextlib.suppress(ssl.SSLWantReadError):
                    while data := tls.read(65536):
                        answer += data
            assert answer.startswith(b"HTTP/1.1 200 OK")
            await close(writer)

    run(journey())


def test_reload_serves_new_connections_the_new_certificate_and_open_ones_keep_working(
    run: Run[None],
    ca: TestCertificateAuthority,
    first: ServerCertificate,
    second: ServerCertificate,
    tmp_path: Path,
) -> None:
    certificate, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    install(first, certificate, key)

    async def journey() -> None:
        store = CertificateStore(str(certificate), str(key))
        async with serving(store) as (listener, _):
            old_reader, old_writer = await connect(listener.port, client(ca))
            assert serial(old_writer) == first.serial
            install(second, certificate, key)
            assert store.reload() is None
            reader, writer = await connect(listener.port, client(ca))
            assert serial(writer) == second.serial
            assert await request(reader, writer) == HELLO_V4
            assert await request(old_reader, old_writer) == HELLO_V4
            assert serial(old_writer) == first.serial
            await close(writer)
            await close(old_writer)

    run(journey())


def test_a_broken_certificate_on_reload_keeps_the_old_one_and_logs_one_line(
    run: Run[None],
    ca: TestCertificateAuthority,
    first: ServerCertificate,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    certificate, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    install(first, certificate, key)

    async def journey() -> None:
        store = CertificateStore(str(certificate), str(key))
        async with serving(store) as (listener, _):
            install(broken_certificate(tmp_path / "broken"), certificate, key)
            with caplog.at_level(logging.INFO, logger="proxy"):
                line = store.reload()
            assert line is not None
            assert [r.getMessage() for r in caplog.records if r.name == "proxy"] == [line]
            assert str(certificate) in line
            assert "previous" in line
            assert "\n" not in line
            reader, writer = await connect(listener.port, client(ca))
            assert serial(writer) == first.serial
            assert await request(reader, writer) == HELLO_V4
            await close(writer)

    run(journey())


def test_a_client_stalling_after_its_client_hello_is_closed_at_the_handshake_timeout(
    run: Run[None], ca: TestCertificateAuthority, first: ServerCertificate
) -> None:
    async def journey() -> None:
        store = store_of(first)
        async with serving(store, handshake_timeout=0.5) as (listener, opened):
            started = time.monotonic()
            reader, writer = await raw(listener.port)
            writer.write(client_hello(client(ca)))  # and never the client's Finished
            assert (await read_all(reader)).startswith(b"\x16")  # the ServerHello, then EOF
            assert 0.4 < time.monotonic() - started < 1.5
            assert opened == []
            await close(writer)

    run(journey())


def test_close_drops_connections_not_yet_handed_to_a_protocol(
    run: Run[None], ca: TestCertificateAuthority, first: ServerCertificate
) -> None:
    async def journey() -> None:
        store = store_of(first)
        async with serving(store, hello_timeout=30.0, handshake_timeout=30.0) as (listener, _):
            silent_reader, silent = await raw(listener.port)
            stalled_reader, stalled = await raw(listener.port)
            stalled.write(client_hello(client(ca)))
            plain_reader, plain = await raw(listener.port)
            plain.write(b"GET / HTTP/1.1\r\n")  # answered, then read until it hangs up
            await asyncio.wait_for(plain_reader.readuntil(b"</html>\r\n"), TIMEOUT)
            await asyncio.wait_for(stalled_reader.readexactly(1), TIMEOUT)  # in the handshake
            started = time.monotonic()
        assert await read_all(silent_reader) == b""
        with contextlib.suppress(ConnectionResetError):  # TLS aborts the stalled handshake
            await read_all(stalled_reader)
        assert await read_all(plain_reader) == b""
        assert time.monotonic() - started < 1.0
        assert not listener.is_serving()
        for writer in (silent, stalled, plain):
            with contextlib.suppress(ConnectionResetError):
                await close(writer)

    run(journey())


def test_ssl_protocols_bound_the_versions(
    run: Run[None], ca: TestCertificateAuthority, first: ServerCertificate
) -> None:
    async def journey() -> None:
        store = CertificateStore(str(first.certificate), str(first.key), protocols=["TLSv1.3"])
        async with serving(store) as (listener, _):
            old = client(ca)
            old.maximum_version = ssl.TLSVersion.TLSv1_2
            # Both loops' TLS abort a failed handshake, as asyncio.start_server(ssl=) does:
            # the client sees OpenSSL's protocol_version alert or just the reset.
            with pytest.raises((ssl.SSLError, ConnectionResetError)):
                await connect(listener.port, old)
            _reader, writer = await connect(listener.port, client(ca))
            assert writer.get_extra_info("ssl_object").version() == "TLSv1.3"
            await close(writer)

    run(journey())


def test_ssl_protocols_parsing() -> None:
    assert protocol_range(["TLSv1.2", "TLSv1.3"]) == (
        ssl.TLSVersion.TLSv1_2,
        ssl.TLSVersion.TLSv1_3,
    )
    assert protocol_range(["TLSv1.2"]) == (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2)
    for bad, why in [
        (["TLSv1.4"], "unknown protocol 'TLSv1.4'"),
        (["SSLv3", "TLSv1.2"], "unknown protocol 'SSLv3'"),
        ([], "names no protocol"),
        (["TLSv1", "TLSv1.3"], "contiguous"),
    ]:
        with pytest.raises(SettingsError, match="ssl_protocols") as caught:
            protocol_range(bad)
        assert why in str(caught.value)


@pytest.mark.parametrize(
    ("make", "setting", "why"),
    [
        (lambda c, o, d: (d / "missing.pem", c.key), "ssl_certificate", "no such file"),
        (lambda c, o, d: (c.certificate, d / "missing.key"), "ssl_certificate_key", "no such file"),
        (lambda c, o, d: (d, c.key), "ssl_certificate", "cannot be read"),
        (lambda c, o, d: (c.key, c.key), "ssl_certificate", "holds no PEM certificate"),
        (
            lambda c, o, d: (c.certificate, c.certificate),
            "ssl_certificate_key",
            "no PEM private key",
        ),
        (lambda c, o, d: (c.certificate, o.key), "ssl_certificate_key", "does not match"),
        (lambda c, o, d: (broken_certificate(d).certificate, c.key), "ssl_certificate", "parsed"),
    ],
    ids=[
        "missing certificate",
        "missing key",
        "directory",
        "key as certificate",
        "certificate as key",
        "mismatched key",
        "garbage certificate",
    ],
)
def test_bad_certificate_or_key_files_say_which_and_why(
    make: Callable[[ServerCertificate, ServerCertificate, Path], tuple[Path, Path]],
    setting: str,
    why: str,
    first: ServerCertificate,
    second: ServerCertificate,
    tmp_path: Path,
) -> None:
    certificate, key = make(first, second, tmp_path)
    with pytest.raises(TlsError) as caught:
        server_context(str(certificate), str(key))
    error = caught.value
    assert error.key == setting
    assert str(error).startswith(f"{setting} {error.path}: ")
    assert error.path == str(certificate if setting == "ssl_certificate" else key)
    assert why in error.why


def test_an_encrypted_key_is_refused_without_a_prompt(
    first: ServerCertificate, tmp_path: Path
) -> None:
    encrypted = tmp_path / "encrypted.key"
    subprocess.run(
        [
            "openssl",
            "pkey",
            "-in",
            str(first.key),
            "-aes256",
            "-passout",
            "pass:x",
            "-out",
            str(encrypted),
        ],
        check=True,
        timeout=30,
    )
    with pytest.raises(TlsError, match="encrypted"):
        server_context(str(first.certificate), str(encrypted))


def test_bad_ciphers_name_the_setting(first: ServerCertificate) -> None:
    with pytest.raises(SettingsError, match="ssl_ciphers"):
        server_context(str(first.certificate), str(first.key), ciphers="NOT-A-CIPHER")


def test_offered_alpn_reads_real_client_hellos(ca: TestCertificateAuthority) -> None:
    assert offered_alpn(client_hello(client(ca, "h2", "http/1.1"))) == [b"h2", b"http/1.1"]
    assert offered_alpn(client_hello(client(ca, "h2"))) == [b"h2"]
    assert offered_alpn(client_hello(client(ca))) is None
    hello = client_hello(client(ca, "h2"))
    assert offered_alpn(hello[:60]) is None  # cut before the extensions
    assert offered_alpn(b"\x16\x03\x01\x00\x01\x02") is None  # not a ClientHello
    assert offered_alpn(b"GET / HTTP/1.1\r\n") is None


def test_make_certificate_writes_a_pair_the_proxy_loads(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(ROOT / "scripts" / "make-certificate"), str(tmp_path / "certs")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    certificate, key = tmp_path / "certs" / "cert.pem", tmp_path / "certs" / "key.pem"
    assert f"wrote {certificate}" in done.stdout
    assert f"wrote {key}" in done.stdout
    assert key.stat().st_mode & 0o077 == 0
    context = server_context(str(certificate), str(key))

    async def journey() -> None:
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, ssl=context)
        trusting = ssl.create_default_context(cafile=str(certificate))
        port = server.sockets[0].getsockname()[1]
        try:
            for name in ("localhost", "127.0.0.1"):
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port, ssl=trusting, server_hostname=name),
                    TIMEOUT,
                )
                await read_all(reader)
                writer.close()
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(journey())
