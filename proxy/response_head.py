"""An upstream response head rewritten for the client: hop-by-hop lines removed, the
body's framing decided (sized, chunked for an HTTP/1.1 client, or until close), the
keep-alive of both connections. Pure: no I/O.
"""

from __future__ import annotations

import re
from typing import Literal

from proxy.hop_by_hop import PLAIN_TOKENS, PROTECTED, connection_tokens

Framing = Literal["none", "length", "chunked", "close"]
NO_BODY_STATUSES = frozenset({204, 304})

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
ResponseRewrite = tuple[bytes, Framing, bool, bool, int, bool]

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
) -> ResponseRewrite:
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
                tokens = connection_tokens([value])
                if b"close" in tokens:
                    upstream_keep_alive = False
                elif b"keep-alive" in tokens:
                    upstream_keep_alive = True
                named |= tokens - PLAIN_TOKENS - PROTECTED
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
