"""The proxy with `listen ... ssl`: real TLS over loopback to a ProxyServer in front of raw
upstreams. What the upstream is told of the scheme, HSTS, redirect_to_https, plain HTTP
and h2-only clients on the ssl port, and every listener sharing one pool."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from proxy.edge import redirect_answer
from proxy.errors import TlsError
from proxy.server import ProxyServer
from proxy.settings import ProxySettings
from tests.proxy.support import RawUpstream, Response, exchange, read_response, settings
from tests.support.certificates import ServerCertificate, TestCertificateAuthority

TIMEOUT = 5.0  # every client operation: a hang fails the test instead of stalling the run
SAME_CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"
    b"2\r\nok\r\n0\r\n\r\n"
)


@pytest.fixture(scope="module")
def certificate(ca: TestCertificateAuthority) -> ServerCertificate:
    return ca.issue("proxy")


def tls_settings(
    upstream: RawUpstream, certificate: ServerCertificate, **overrides: object
) -> ProxySettings:
    return settings(
        {"app1": upstream.port},
        listen="127.0.0.1:0,127.0.0.1:0 ssl",
        ssl_certificate=str(certificate.certificate),
        ssl_certificate_key=str(certificate.key),
        **overrides,
    )


@pytest.fixture
async def upstream() -> AsyncIterator[RawUpstream]:
    server = await RawUpstream("app1").start()
    yield server
    await server.stop()


async def tls_exchange(
    port: int, ca: TestCertificateAuthority, request: bytes, *, count: int = 1
) -> list[Response]:
    """`count` responses to `request`, sent `count` times on one TLS connection."""
    async with asyncio.timeout(TIMEOUT):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ca.client_context(), server_hostname="localhost"
        )
        try:
            answers = []
            for _ in range(count):
                writer.write(request)
                answers.append(await read_response(reader))
            return answers
        finally:
            writer.close()


def get(path: str = "/", extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: example.test\r\n{extra}\r\n".encode()


def forwarded(head: bytes, name: bytes) -> list[bytes]:
    return [
        line.partition(b":")[2].strip()
        for line in head.split(b"\r\n")
        if line.lower().startswith(name.lower() + b":")
    ]


async def test_each_listener_tells_the_upstream_its_own_scheme(
    upstream: RawUpstream, ca: TestCertificateAuthority, certificate: ServerCertificate
) -> None:
    async with ProxyServer(tls_settings(upstream, certificate)) as proxy:
        plain_port, ssl_port = proxy.ports
        assert proxy.port == plain_port and proxy.ssl_port == ssl_port != plain_port
        # A lean keep-alive GET, twice on one connection: the tail is the connection's.
        answers = await tls_exchange(ssl_port, ca, get("/a"), count=2)
        assert [answer.status for answer in answers] == [200, 200]
        plain = await exchange(plain_port, get("/b"))
        assert plain.status == 200
    heads = upstream.heads
    assert [forwarded(head, b"X-Forwarded-Proto") for head in heads] == [
        [b"https"],
        [b"https"],
        [b"http"],
    ]
    assert all(forwarded(head, b"X-Forwarded-For") == [b"127.0.0.1"] for head in heads)
    # Both listeners share one pool: the plain request reused the TLS side's connection.
    assert upstream.connections == 1


async def test_the_parser_path_tells_the_upstream_the_scheme_too(
    upstream: RawUpstream, ca: TestCertificateAuthority, certificate: ServerCertificate
) -> None:
    post = b"POST /test HTTP/1.1\r\nHost: example.test\r\nContent-Length: 3\r\n\r\na=b"
    http10 = b"GET /old HTTP/1.0\r\n\r\n"
    async with ProxyServer(tls_settings(upstream, certificate)) as proxy:
        assert proxy.ssl_port is not None
        for request in (post, http10, get("/", "X-Forwarded-Proto: http\r\n")):
            (answer,) = await tls_exchange(proxy.ssl_port, ca, request)
            assert answer.status == 200
        assert (await exchange(proxy.port, post)).status == 200
    assert [forwarded(head, b"X-Forwarded-Proto") for head in upstream.heads] == [
        [b"https"],
        [b"https"],
        [b"https"],
        [b"http"],
    ]


async def test_a_spoofed_scheme_from_an_untrusted_peer_is_replaced(
    upstream: RawUpstream, ca: TestCertificateAuthority, certificate: ServerCertificate
) -> None:
    spoof = "X-Forwarded-Proto: https\r\nX-Forwarded-For: 203.0.113.9\r\n"
    async with ProxyServer(tls_settings(upstream, certificate)) as proxy:
        assert (await exchange(proxy.port, get("/", spoof))).status == 200
    (head,) = upstream.heads
    assert forwarded(head, b"X-Forwarded-Proto") == [b"http"]
    assert forwarded(head, b"X-Forwarded-For") == [b"127.0.0.1"]


async def test_a_trusted_peer_on_the_ssl_port_keeps_its_word_or_gets_https(
    upstream: RawUpstream, ca: TestCertificateAuthority, certificate: ServerCertificate
) -> None:
    proxy_settings = tls_settings(upstream, certificate, set_real_ip_from="127.0.0.1")
    async with ProxyServer(proxy_settings) as proxy:
        assert proxy.ssl_port is not None
        await tls_exchange(proxy.ssl_port, ca, get("/", "X-Forwarded-For: 198.51.100.4\r\n"))
    (head,) = upstream.heads
    assert forwarded(head, b"X-Real-IP") == [b"198.51.100.4"]


async def test_hsts_on_every_kind_of_answer_over_tls_and_never_on_plain(
    upstream: RawUpstream, ca: TestCertificateAuthority, certificate: ServerCertificate
) -> None:
    hsts = "max-age=31536000"
    async with ProxyServer(tls_settings(upstream, certificate, hsts_max_age=31536000)) as proxy:
        assert proxy.ssl_port is not None
        lean = await tls_exchange(proxy.ssl_port, ca, get("/lean"), count=2)
        assert [answer.headers.get("strict-transport-security") for answer in lean] == [hsts] * 2
        assert all(answer.body == b"ap" for answer in lean)
        # An upstream answer with a Connection line, and one the parser path relays.
        upstream.response = (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"
        )
        (with_line,) = await tls_exchange(proxy.ssl_port, ca, get("/line"))
        assert with_line.headers["strict-transport-security"] == hsts
        assert "connection" not in with_line.headers and with_line.body == b"ap"
        upstream.response = SAME_CHUNKED
        (chunked,) = await tls_exchange(proxy.ssl_port, ca, get("/chunked"))
        assert chunked.headers["strict-transport-security"] == hsts
        assert chunked.body == b"ap"
        plain = await exchange(proxy.port, get("/plain"))
        assert plain.status == 200 and "strict-transport-security" not in plain.headers


async def test_redirect_to_https_except_status_and_health(
    upstream: RawUpstream, ca: TestCertificateAuthority, certificate: ServerCertificate
) -> None:
    proxy_settings = tls_settings(upstream, certificate, redirect_to_https=True)
    async with ProxyServer(proxy_settings) as proxy:
        ssl_port = proxy.ssl_port
        moved = await exchange(
            proxy.port,
            get("/test;jsessionid=X?dataName=a&dataValue=b").replace(
                b"example.test", b"example.test:8080"
            ),
        )
        assert moved.status == 301
        assert moved.headers["location"] == (
            f"https://example.test:{ssl_port}/test;jsessionid=X?dataName=a&dataValue=b"
        )
        assert moved.headers["connection"] == "close"
        post = b"POST /form HTTP/1.1\r\nHost: [::1]:8080\r\nContent-Length: 3\r\n\r\na=b"
        answer = await exchange(proxy.port, post)
        assert (answer.status, answer.headers["location"]) == (
            301,
            f"https://[::1]:{ssl_port}/form",
        )
        assert (await exchange(proxy.port, get("/health"))).status == 200
        assert (await exchange(proxy.port, get("/health?full=1"))).status == 200
        status = await exchange(proxy.port, get("/_proxy/status.json"))
        assert status.status == 200 and b"upstreams" in status.body
        # Behind an exempt request, a pipelined one would pass unseen: the whole read moves.
        pipelined = await exchange(proxy.port, get("/health") + get("/secret"))
        assert pipelined.status == 301
        bad_host = await exchange(proxy.port, get("/", "").replace(b"example.test", b"a b"))
        assert bad_host.status == 400
        # The ssl listener itself serves everything.
        (served,) = await tls_exchange(proxy.ssl_port or 0, ca, get("/test"))
        assert served.status == 200
    assert [head.split(b" ")[1] for head in upstream.heads] == [
        b"/health",
        b"/health?full=1",
        b"/test",
    ]


def test_the_redirect_leaves_out_port_443_and_answers_head_without_a_body() -> None:
    head = b"HEAD /x?y=1 HTTP/1.1\r\nHost: example.test:80\r\n\r\n"
    answer = redirect_answer(head, port=443, default_host=b"", exempt=(b"/_proxy/", b"/health"))
    assert answer is not None
    assert b"\r\nLocation: https://example.test/x?y=1\r\n" in answer
    assert answer.endswith(b"\r\n\r\n") and b"Content-Length: " in answer
    http10 = b"GET / HTTP/1.0\r\n\r\n"
    answer = redirect_answer(http10, port=8443, default_host=b"10.0.0.1", exempt=None)
    assert answer is not None and b"Location: https://10.0.0.1:8443/\r\n" in answer
    for bad in (b"GET http://evil/ HTTP/1.1\r\n\r\n", b"\x16\x03\x01 junk\r\n\r\n"):
        answer = redirect_answer(bad, port=8443, default_host=b"h", exempt=None)
        assert answer is not None and answer.startswith(b"HTTP/1.1 400 ")


async def test_plain_http_on_the_ssl_port_gets_the_400_within_a_second(
    upstream: RawUpstream, certificate: ServerCertificate
) -> None:
    async with ProxyServer(tls_settings(upstream, certificate)) as proxy:
        assert proxy.ssl_port is not None
        started = time.monotonic()
        answer = await exchange(proxy.ssl_port, get("/"), within=1.0)
        assert time.monotonic() - started < 1.0
        assert answer.status == 400
        assert b"The plain HTTP request was sent to HTTPS port" in answer.body
    assert upstream.heads == []


async def test_a_client_offering_only_h2_is_refused_with_an_alert(
    upstream: RawUpstream, ca: TestCertificateAuthority, certificate: ServerCertificate
) -> None:
    context = ca.client_context()
    context.set_alpn_protocols(["h2"])
    async with ProxyServer(tls_settings(upstream, certificate)) as proxy:
        assert proxy.ssl_port is not None
        with pytest.raises(ssl.SSLError, match="no application protocol"):
            async with asyncio.timeout(TIMEOUT):
                await asyncio.open_connection(
                    "127.0.0.1", proxy.ssl_port, ssl=context, server_hostname="localhost"
                )
        both = ca.client_context()
        both.set_alpn_protocols(["h2", "http/1.1"])
        async with asyncio.timeout(TIMEOUT):
            _, writer = await asyncio.open_connection(
                "127.0.0.1", proxy.ssl_port, ssl=both, server_hostname="localhost"
            )
            assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "http/1.1"
            writer.close()


async def test_a_missing_certificate_fails_the_start_naming_the_file(
    upstream: RawUpstream, certificate: ServerCertificate, tmp_path: Path
) -> None:
    missing = tmp_path / "missing.pem"
    proxy_settings = settings(
        {"app1": upstream.port},
        listen="127.0.0.1:0,127.0.0.1:0 ssl",
        ssl_certificate=str(missing),
        ssl_certificate_key=str(certificate.key),
    )
    proxy = ProxyServer(proxy_settings)
    with pytest.raises(TlsError) as caught:
        await proxy.start()
    assert caught.value.key == "ssl_certificate" and str(missing) in str(caught.value)
    await proxy.close(grace=0.1)
