"""Header rewriting and request checks, byte for byte, without sockets."""

from __future__ import annotations

import pytest

from proxy.errors import BadRequestError
from proxy.request_head import prepare_request
from proxy.response_head import prepare_response


def prepare(headers: list[tuple[bytes, bytes]], method: bytes = b"GET", **kw: object):  # type: ignore[no-untyped-def]
    options: dict[str, object] = {
        "http_version": "1.1",
        "upgrade": False,
        "client_ip": b"10.0.0.9",
        "max_body_size": 1024,
    }
    options.update(kw)
    return prepare_request(method, b"/test?a=1", headers, **options)  # type: ignore[arg-type]


def test_request_head_for_the_upstream() -> None:
    prepared = prepare(
        [
            (b"Host", b"shop.test"),
            (b"Connection", b"keep-alive, X-Secret"),
            (b"Keep-Alive", b"timeout=5"),
            (b"X-Secret", b"hop"),
            (b"TE", b"trailers"),
            (b"Proxy-Authorization", b"Basic eA=="),
            (b"X-Forwarded-For", b"1.2.3.4"),
            (b"X-Real-IP", b"6.6.6.6"),
            (b"Cookie", b"JSESSIONID=abc.app1"),
            (b"Accept-Encoding", b"gzip"),
        ]
    )
    assert prepared.head == (
        b"GET /test?a=1 HTTP/1.1\r\n"
        b"Host: shop.test\r\n"
        b"Cookie: JSESSIONID=abc.app1\r\n"
        b"Accept-Encoding: gzip\r\n"
        b"X-Forwarded-Host: shop.test\r\n"
        # An untrusted peer's X-Forwarded-For and X-Real-IP are replaced, not appended to.
        b"X-Forwarded-For: 10.0.0.9\r\n"
        b"X-Forwarded-Proto: http\r\n"
        b"X-Real-IP: 10.0.0.9\r\n"
        b"\r\n"
    )
    assert prepared.cookies == ["JSESSIONID=abc.app1"]
    assert prepared.idempotent


def test_a_trusted_peer_names_the_client_scheme_and_host() -> None:
    claims = [
        (b"Host", b"shop.test"),
        (b"X-Forwarded-For", b"198.51.100.7, 1.2.3.4"),
        (b"X-Forwarded-Proto", b"https"),
        (b"X-Forwarded-Host", b"www.shop.test"),
        (b"X-Real-IP", b"6.6.6.6"),
    ]
    prepared = prepare(claims, real_ip_header=b"x-forwarded-for")
    assert prepared.head.endswith(
        b"X-Forwarded-Host: www.shop.test\r\n"
        b"X-Forwarded-For: 198.51.100.7, 1.2.3.4, 10.0.0.9\r\n"
        b"X-Forwarded-Proto: https\r\n"
        b"X-Real-IP: 1.2.3.4\r\n\r\n"
    )
    by_real_ip = prepare(claims, real_ip_header=b"x-real-ip")
    assert b"X-Real-IP: 6.6.6.6\r\n" in by_real_ip.head
    custom = prepare(
        [*claims, (b"CF-Connecting-IP", b"2001:db8::1")], real_ip_header=b"cf-connecting-ip"
    )
    assert b"X-Real-IP: 2001:db8::1\r\n" in custom.head
    # Garbage claims fall back to what the proxy knows.
    garbage = prepare(
        [(b"Host", b"h"), (b"X-Forwarded-For", b"<script>"), (b"X-Forwarded-Proto", b"gopher"),
         (b"X-Forwarded-Host", b"a/b")],
        real_ip_header=b"x-forwarded-for",
    )
    assert garbage.head.endswith(
        b"X-Forwarded-Host: h\r\nX-Forwarded-For: <script>, 10.0.0.9\r\n"
        b"X-Forwarded-Proto: http\r\nX-Real-IP: 10.0.0.9\r\n\r\n"
    )


def test_chunked_body_is_reframed_and_post_is_not_idempotent() -> None:
    prepared = prepare([(b"Host", b"h"), (b"Transfer-Encoding", b"chunked")], method=b"POST")
    assert prepared.chunked and not prepared.idempotent
    assert prepared.head.endswith(b"Transfer-Encoding: chunked\r\n\r\n")


def test_websocket_upgrade_keeps_upgrade_headers() -> None:
    prepared = prepare(
        [(b"Host", b"h"), (b"Connection", b"Upgrade"), (b"Upgrade", b"websocket")], upgrade=True
    )
    assert prepared.upgrade
    assert prepared.head.endswith(b"Upgrade: websocket\r\nConnection: upgrade\r\n\r\n")


@pytest.mark.parametrize(
    ("headers", "method", "status"),
    [
        ([(b"Host", b"h"), (b"Content-Length", b"2048")], b"POST", 413),
        ([], b"GET", 400),
        ([(b"Host", b"a"), (b"Host", b"b")], b"GET", 400),
        ([(b"Host", b"h")], b"CONNECT", 405),
        (
            [(b"Host", b"h"), (b"Content-Length", b"1"), (b"Transfer-Encoding", b"chunked")],
            b"POST",
            400,
        ),
    ],
)
def test_bad_requests(headers: list[tuple[bytes, bytes]], method: bytes, status: int) -> None:
    with pytest.raises(BadRequestError) as caught:
        prepare(headers, method=method)
    assert caught.value.status == status


def test_response_head_drops_hop_by_hop_and_keeps_content_encoding() -> None:
    head, framing, keep_alive, until_close, *_ = prepare_response(
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nConnection: keep-alive, X-Hop\r\n"
        b"X-Hop: 1\r\nKeep-Alive: timeout=5\r\nContent-Length: 3",
        200,
        head_only=False,
        client_http11=True,
        client_keep_alive=True,
    )
    assert head == b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 3\r\n\r\n"
    assert (framing, keep_alive, until_close) == ("length", True, False)


def test_close_delimited_body_becomes_chunked_for_http11_and_close_for_http10() -> None:
    raw = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain"
    head, framing, keep_alive, until_close, *_ = prepare_response(
        raw, 200, head_only=False, client_http11=True, client_keep_alive=True
    )
    assert head.endswith(b"Transfer-Encoding: chunked\r\n\r\n")
    assert (framing, keep_alive, until_close) == ("chunked", True, True)
    head, framing, keep_alive, *_ = prepare_response(
        raw, 200, head_only=False, client_http11=False, client_keep_alive=True
    )
    assert head.endswith(b"Connection: close\r\n\r\n")
    assert (framing, keep_alive) == ("close", False)


def test_no_body_for_head_204_304() -> None:
    for status, head_only in ((200, True), (204, False), (304, False)):
        _, framing, _, until_close, *_ = prepare_response(
            b"HTTP/1.1 %d X\r\nContent-Length: 10" % status,
            status,
            head_only=head_only,
            client_http11=True,
            client_keep_alive=True,
        )
        assert (framing, until_close) == ("none", False)
