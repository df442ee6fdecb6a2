"""HTTP/1.1 request checks and the head sent upstream. Pure: no I/O.

What reaches the upstream: the request line as received (always HTTP/1.1),
Host passed through, hop-by-hop headers removed (Connection and the headers it
names, Keep-Alive, TE, Trailer, Transfer-Encoding, Upgrade, Proxy-*),
X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host and X-Real-IP set by the
proxy: from a peer in `set_real_ip_from` the client's claims are kept (the chain
appended to), from anyone else replaced. Framing (Content-Length or chunked) is
re-added by the proxy itself. The response side is response_head.py's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from proxy.errors import BadRequestError
from proxy.hop_by_hop import HOP_BY_HOP, PLAIN_TOKENS, PROTECTED, connection_tokens

Header = tuple[bytes, bytes]

IDEMPOTENT_METHODS = frozenset(
    {b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE", b"PROPFIND"}
)
_REFUSED_METHODS = frozenset({b"CONNECT", b"TRACE"})


class PreparedRequest:
    """A checked client request and the head to send upstream."""

    __slots__ = (
        "chunked",
        "close_requested",
        "content_length",
        "cookies",
        "expect_continue",
        "head",
        "idempotent",
        "request_id",
        "upgrade",
    )

    def __init__(
        self,
        head: bytes,
        content_length: int | None,
        chunked: bool,
        upgrade: bool,
        idempotent: bool,
        cookies: list[str],
    ) -> None:
        self.head = head
        self.content_length = content_length
        self.chunked = chunked
        self.upgrade = upgrade
        self.idempotent = idempotent
        self.cookies = cookies
        self.expect_continue = False
        self.close_requested = False
        self.request_id = b""

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)


# The flags of every request the lean path takes (body-less, idempotent, no upgrade);
# its head lives on the exchange.
BODYLESS_REQUEST = PreparedRequest(b"", None, False, False, True, [])


def _drop_named(lines: list[bytes], dropped: set[bytes]) -> list[bytes]:
    """Remove `name: value\r\n` groups (4 items each, from index 1) whose name is dropped."""
    kept = lines[:1]
    for index in range(1, len(lines) - 3, 4):
        if lines[index].lower() not in dropped:
            kept += lines[index : index + 4]
    return kept


def prepare_request(
    method: bytes,
    target: bytes,
    headers: Sequence[Header],
    *,
    http_version: str,
    upgrade: bool,
    client_ip: bytes,
    max_body_size: int,
    default_host: bytes = b"",
    real_ip_header: bytes | None = None,
    scheme: bytes = b"http",
    request_id: bytes = b"",
) -> PreparedRequest:
    """Check a parsed request and build the head for the upstream, or raise BadRequestError.

    `upgrade` is the parser's verdict that this is a protocol upgrade (WebSocket).
    The syntax (methods, header names, Content-Length digits and duplicates,
    Transfer-Encoding with Content-Length, obs-fold) was checked by llhttp already.
    `default_host` is the Host sent for an HTTP/1.0 request that has none (nginx's
    $host falls back to the server's own name), as HTTP/1.1 requires one.
    `real_ip_header` (lower case) is set when the peer is trusted to name the client.
    `scheme` is the connection's (b"https" on an ssl listener): what X-Forwarded-Proto says,
    unless a trusted peer says otherwise. `request_id` goes upstream as X-Request-ID,
    unless a trusted peer sent a well-formed one (kept; prepared.request_id says which).
    """
    if method in _REFUSED_METHODS:
        raise BadRequestError(405, f"method {method.decode()} not allowed")
    if target[:1] != b"/" and not (target == b"*" and method == b"OPTIONS"):
        raise BadRequestError(400, "request target must be an absolute path")
    lines = [method + b" " + target + b" HTTP/1.1\r\n"]
    host: bytes | None = None
    content_length: int | None = None
    chunked = False
    connection_values: list[bytes] = []
    forwarded: dict[bytes, bytes] = {}
    upgrade_value: bytes | None = None
    cookies: list[str] = []
    expect_continue = False
    incoming_id: bytes | None = None
    for name, value in headers:
        low = name.lower()
        if low in _WATCHED_REQUEST:
            if low == b"host":
                if host is not None:
                    raise BadRequestError(400, "more than one Host header")
                if _HOST.fullmatch(value) is None:
                    raise BadRequestError(400, "invalid Host header")
                host = value
            elif low == b"content-length":
                content_length = int(value)
                # The proxy's own framing line, in place: digits only, however sent.
                lines += (b"Content-Length", b": ", b"%d" % content_length, b"\r\n")
                continue
            elif low == b"cookie":
                cookies.append(value.decode("latin-1"))
            elif low == b"expect":
                expect_continue = value.lower() == b"100-continue"
                continue  # the proxy answers 100-continue itself, as nginx does
            else:
                if low == b"transfer-encoding":
                    # The proxy re-chunks what it decoded: any other coding would be
                    # lost on the way.
                    if value.strip().lower() != b"chunked":
                        raise BadRequestError(400, "only Transfer-Encoding: chunked is supported")
                    if http_version != "1.1":
                        raise BadRequestError(400, "Transfer-Encoding in an HTTP/1.0 request")
                    chunked = True
                elif low == b"connection":
                    connection_values.append(value)
                elif low in _FORWARDING:
                    seen = forwarded.get(low)
                    forwarded[low] = value if seen is None else seen + b", " + value
                elif low == b"upgrade":
                    upgrade_value = value
                elif low == b"x-request-id":
                    incoming_id = value  # the proxy's own replaces it unless trusted
                continue
        elif low[:6] == b"proxy-":
            continue
        lines += (name, b": ", value, b"\r\n")
    if host is None:
        if http_version == "1.1" or not default_host:
            raise BadRequestError(400, "missing Host header")
        host = default_host
        lines[1:1] = (b"Host", b": ", host, b"\r\n")
    if content_length is not None and chunked:
        raise BadRequestError(400, "both Content-Length and Transfer-Encoding")
    if upgrade and (method != b"GET" or chunked or content_length):
        # Only a body-less GET can switch protocols (RFC 6455); anything else would leave
        # its body unparsed behind the head, the upstream waiting for it, and the stall
        # blamed on the upstream.
        raise BadRequestError(400, "Upgrade on a request that cannot upgrade")
    if max_body_size and content_length is not None and content_length > max_body_size:
        raise BadRequestError(413, "request body larger than client_max_body_size")
    tunnel = close_requested = False
    if connection_values:
        tokens = connection_tokens(connection_values)
        close_requested = b"close" in tokens
        tunnel = upgrade and upgrade_value is not None and b"upgrade" in tokens
        dropped = tokens - PLAIN_TOKENS - PROTECTED
        if dropped:
            lines = _drop_named(lines, dropped)
    if real_ip_header is None:
        lines += (b"X-Forwarded-Host: ", host, b"\r\nX-Forwarded-For: ", client_ip)
        lines += (b"\r\nX-Forwarded-Proto: ", scheme, b"\r\nX-Real-IP: ", client_ip, b"\r\n")
    else:
        if real_ip_header not in _FORWARDING:
            for name, value in headers:
                if name.lower() == real_ip_header:
                    forwarded[real_ip_header] = value
        lines += trusted_forwarding(host, client_ip, forwarded, real_ip_header, scheme)
    if (
        real_ip_header is not None
        and incoming_id is not None
        and _REQUEST_ID.fullmatch(incoming_id)
    ):
        request_id = incoming_id
    if request_id:
        lines += (b"X-Request-ID: ", request_id, b"\r\n")
    if chunked:
        lines.append(b"Transfer-Encoding: chunked\r\n")
    if tunnel and upgrade_value is not None:
        lines += (b"Upgrade: ", upgrade_value, b"\r\nConnection: upgrade\r\n")
    lines.append(b"\r\n")
    prepared = PreparedRequest(
        b"".join(lines),
        content_length,
        chunked,
        tunnel,
        method in IDEMPOTENT_METHODS,
        cookies,
    )
    prepared.expect_continue = expect_continue and (chunked or bool(content_length))
    prepared.close_requested = close_requested
    prepared.request_id = request_id
    return prepared


# An X-Request-ID a trusted peer may hand on: visible ASCII, no spaces, bounded.
_REQUEST_ID = re.compile(rb"[\x21-\x7e]{1,200}")

_FORWARDING = frozenset(
    {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-real-ip"}
)


def trusted_forwarding(
    host: bytes,
    peer: bytes,
    claimed: dict[bytes, bytes],
    real_ip_header: bytes,
    scheme: bytes = b"http",
) -> tuple[bytes, ...]:
    """The X-Forwarded-* lines for a request from a trusted proxy: its word on the
    client (`real_ip_header`, the last address of a list), scheme and host is kept when
    well formed (else the connection's `scheme` and Host); the chain gets the peer
    appended."""
    named = claimed.get(real_ip_header, b"").rpartition(b",")[2].strip()
    client = named if _IP.fullmatch(named) else peer
    chain = claimed.get(b"x-forwarded-for")
    proto = claimed.get(b"x-forwarded-proto", b"").rpartition(b",")[2].strip().lower()
    if proto not in (b"http", b"https"):
        proto = scheme
    forwarded_host = claimed.get(b"x-forwarded-host", b"").rpartition(b",")[2].strip()
    if _HOST.fullmatch(forwarded_host) is None:
        forwarded_host = host
    return (
        b"X-Forwarded-Host: ",
        forwarded_host,
        b"\r\nX-Forwarded-For: ",
        chain + b", " + peer if chain else peer,
        b"\r\nX-Forwarded-Proto: ",
        proto,
        b"\r\nX-Real-IP: ",
        client,
        b"\r\n",
    )


# An IPv4 or IPv6 address as X-Forwarded-For lists them.
_IP = re.compile(rb"[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*")
# A Host value: a registered name or an IPv4 or bracketed IPv6 address, and a port.
_HOST = re.compile(rb"(?:[A-Za-z0-9._~!$&'()*+,;=%-]++|\[[0-9A-Fa-f:.]++\])(?::[0-9]{1,5})?")

_WATCHED_REQUEST = frozenset(
    {
        b"host",
        b"content-length",
        b"cookie",
        b"expect",
        b"x-forwarded-for",
        b"x-real-ip",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-request-id",
        *HOP_BY_HOP,
    }
)
