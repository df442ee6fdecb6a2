"""HTTP/1.1 request checks and header rewriting for both directions. Pure: no I/O.

What reaches the upstream: the request line as received (always HTTP/1.1),
Host passed through, hop-by-hop headers removed (Connection and the headers it
names, Keep-Alive, TE, Trailer, Transfer-Encoding, Upgrade, Proxy-*),
X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host and X-Real-IP set by the
proxy: from a peer in `set_real_ip_from` the client's claims are kept (the chain
appended to), from anyone else replaced. Framing (Content-Length or chunked) is
re-added by the proxy itself.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from proxy.errors import BadRequestError

Framing = Literal["none", "length", "chunked", "close"]

Header = tuple[bytes, bytes]

HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"te", b"trailer", b"transfer-encoding", b"upgrade"}
)
IDEMPOTENT_METHODS = frozenset(
    {b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE", b"PROPFIND"}
)
_REFUSED_METHODS = frozenset({b"CONNECT", b"TRACE"})
NO_BODY_STATUSES = frozenset({204, 304})


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


def _connection_tokens(values: Sequence[bytes]) -> set[bytes]:
    tokens: set[bytes] = set()
    for value in values:
        for token in value.split(b","):
            token = token.strip().lower()
            if token:
                tokens.add(token)
    return tokens


# Connection tokens that name no header of their own.
_PLAIN_TOKENS = frozenset({b"close", b"keep-alive", b"upgrade"})
# What a Connection header may never remove: the framing is the proxy's (it decided
# how the body ends) and Host is not hop-by-hop (RFC 9110 7.6.1). Naming one of them
# once let a client strip Content-Length while its body still went upstream: smuggling.
_PROTECTED = frozenset({b"content-length", b"transfer-encoding", b"host"})


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
        tokens = _connection_tokens(connection_values)
        close_requested = b"close" in tokens
        tunnel = upgrade and upgrade_value is not None and b"upgrade" in tokens
        dropped = tokens - _PLAIN_TOKENS - _PROTECTED
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


_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
# The response header lines the proxy must look at: one scan of the lower-cased head
# finds them all (case-sensitive matching lets the regex engine jump from CRLF to CRLF).
_SPECIAL_LINE = re.compile(
    rb"\r\n(connection|keep-alive|te|trailer|transfer-encoding|upgrade|content-length|proxy-"
    + _TOKEN
    + rb")[ \t]*:[ \t]*([^\r\n]*)"
)


def _drop_header_lines(head: bytes, names: set[bytes]) -> bytes:
    lines = head.split(b"\r\n")
    kept = [lines[0]]
    for line in lines[1:]:
        if line.split(b":", 1)[0].strip().lower() not in names:
            kept.append(line)
    return b"\r\n".join(kept)


# How one upstream response reaches the client, as a plain tuple (the hot path):
# (head for the client, framing of the client's body, client connection stays open,
#  upstream delimits the body by closing, upstream Content-Length or -1 (-2 when
#  duplicated), upstream connection may be reused).
ResponsePlan = tuple[bytes, Framing, bool, bool, int, bool]

_HOP_LINE = re.compile(
    rb"\r\n(?i:connection|keep-alive|te|trailer|transfer-encoding|upgrade|proxy-"
    + _TOKEN
    + rb")[ \t]*:[^\r\n]*"
)
_UPGRADE_VALUE = re.compile(rb"\r\n(?i:upgrade)[ \t]*:[ \t]*([^\r\n]*)")


def prepare_response(
    head: bytes,
    status: int,
    *,
    head_only: bool,
    client_http11: bool,
    client_keep_alive: bool,
    tunnel: bool = False,
) -> ResponsePlan:
    """Rewrite an upstream response head for the client.

    `head` is the raw status line and header lines, without the blank line.
    A body the upstream delimits by chunks or by closing reaches an HTTP/1.1
    client chunked, an HTTP/1.0 client delimited by close. Works on the raw
    bytes with one regular expression scan: this is the hot path.
    """
    has_length = has_chunks = hop = False
    content_length = -1
    upstream_keep_alive = head[5:8] == b"1.1"
    named: set[bytes] = set()
    for name, value in _SPECIAL_LINE.findall(head.lower()):
        if name == b"content-length":
            # A second Content-Length makes the length unknown: the parser rejects it.
            content_length = int(value) if value.isdigit() and not has_length else -2
            has_length = True
            continue
        hop = True
        if name == b"transfer-encoding":
            has_chunks = True
        elif name == b"connection":
            if value == b"close":
                upstream_keep_alive = False
            elif value == b"keep-alive":
                upstream_keep_alive = True
            else:
                tokens = _connection_tokens([value])
                if b"close" in tokens:
                    upstream_keep_alive = False
                elif b"keep-alive" in tokens:
                    upstream_keep_alive = True
                named |= tokens - _PLAIN_TOKENS - _PROTECTED
    kept = _HOP_LINE.sub(b"", head) if hop else head
    if named:
        kept = _drop_header_lines(kept, named)
    framing: Framing
    if head_only or status in NO_BODY_STATUSES or status < 200:
        framing = "none"
    elif has_length and not has_chunks:
        framing = "length"
    elif client_http11:
        framing = "chunked"
    else:
        framing = "close"
    keep_alive = client_keep_alive and framing != "close" and not tunnel
    if tunnel:
        upgrade = _UPGRADE_VALUE.search(head)
        value = upgrade.group(1) if upgrade is not None else b"websocket"
        tail = b"\r\nUpgrade: " + value + b"\r\nConnection: upgrade\r\n\r\n"
    elif framing == "chunked":
        tail = b"\r\nTransfer-Encoding: chunked\r\n\r\n" if keep_alive else _CHUNKED_CLOSE
    elif not keep_alive:
        tail = b"\r\nConnection: close\r\n\r\n"
    elif not client_http11:
        tail = b"\r\nConnection: keep-alive\r\n\r\n"
    else:
        tail = b"\r\n\r\n"
    until_close = framing != "none" and not has_length and not has_chunks and not tunnel
    return (
        b"HTTP/1.1" + kept[8:] + tail,
        framing,
        keep_alive,
        until_close,
        content_length if has_length and not has_chunks else -1,
        upstream_keep_alive and not until_close,
    )


_CHUNKED_CLOSE = b"\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"


_REASONS = {
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}


def error_response(
    status: int, detail: str, *, keep_alive: bool = False, lines: bytes = b""
) -> bytes:
    """A short plain-text response naming the cause, e.g. `502 Bad Gateway: app1 refused`;
    `lines` are more header lines, each led by CRLF (X-Request-ID, HSTS)."""
    reason = _REASONS.get(status, "Error")
    body = f"{status} {reason}: {detail}\n".encode("utf-8", "replace")
    connection = b"keep-alive" if keep_alive else b"close"
    return b"".join(
        (
            b"HTTP/1.1 %d %s" % (status, reason.encode()),
            lines,
            b"\r\nContent-Type: text/plain; charset=utf-8\r\n",
            b"Content-Length: %d\r\nConnection: %s\r\n\r\n" % (len(body), connection),
            body,
        )
    )


def simple_response(
    status: int, content_type: str, body: bytes, *, keep_alive: bool, head_only: bool = False
) -> bytes:
    reason = _REASONS.get(status, "OK" if status == 200 else "Error").encode()
    head = (
        b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
        b"Cache-Control: no-store\r\nConnection: %s\r\n\r\n"
        % (
            status,
            reason,
            content_type.encode(),
            len(body),
            b"keep-alive" if keep_alive else b"close",
        )
    )
    return head if head_only else head + body
