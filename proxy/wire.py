"""Bytes on the wire: size limits and the fast paths' strict patterns. Pure: no I/O.

The fast paths take a whole, simple message from one read without the llhttp
parser and its per-header callbacks. What they accept is a strict subset of
what llhttp accepts; anything else goes through the parser (and its errors).
"""

from __future__ import annotations

import re
from typing import Literal

# Longest request target (414 beyond) and header block (431 beyond), as nginx's
# large_client_header_buffers 4 8k allow.
MAX_TARGET = 8192
MAX_HEADER_BYTES = 32768
# Write buffer high-water mark of every transport: beyond it, the other side pauses.
WRITE_HIGH = 256 * 1024

# Every pattern here runs in time linear in its input, whatever the bytes: each
# repeat is possessive (*+, ++) and no two adjacent parts can match the same byte,
# so the engine never backtracks into what it has matched (tests/proxy/test_linear_heads.py).
_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]++"
_FIELD = _TOKEN + rb":[\t\x20-\x7e\x80-\xff]*+"
SIMPLE_REQUEST = re.compile(
    rb"(GET|HEAD|OPTIONS|DELETE) (/[A-Za-z0-9._~:/?#\[\]@!$&'()*+,;=%-]*+) HTTP/1\.1\r\n((?:"
    + _FIELD
    + rb"\r\n)*+)\r\n"
)
# A value is runs of visible bytes joined by inner white space; white space that does not
# lead to a visible byte is the optional trailing kind, left out of the value.
HEADER_FIELD = re.compile(
    rb"("
    + _TOKEN
    + rb"):[ \t]*+((?:[\x21-\x7e\x80-\xff]++|[ \t]++(?=[\x21-\x7e\x80-\xff]))*+)[ \t]*+\r\n"
)
# A request line of a protocol other than HTTP that llhttp parses all the same.
OTHER_PROTOCOL = re.compile(rb"^[A-Z_]++ [^ \r\n]++ (?:RTSP|ICE)/", re.M)
BODY_OR_UPGRADE = re.compile(rb"^(?:content-length|transfer-encoding|upgrade)[ \t]*:", re.I | re.M)

# The lean paths: one regular expression each validates a whole message head and
# finds what matters in it, so that the common exchange costs no per-header work.
# Possessive repeats (*+) spare the regex engine its backtracking bookkeeping; they
# cannot change what matches, as no repeated part can match what follows it.
_TOKEN_CHARS = "!#$%&'*+.^_`|~0-9A-Za-z-"


def name_other_than(*names: str) -> bytes:
    """A pattern for a header name and its colon that is none of `names`, in any case.

    A name ending in "-" stands for every name it starts. Alternatives are grouped
    by first letter, so that most names are told apart by one character test.
    """
    rests: dict[str, list[str]] = {}
    for name in names:
        rests.setdefault(name[0], []).append(
            re.escape(name[1:]) + ("" if name.endswith("-") else ":")
        )
    letters = "".join(sorted(rests))
    other_first = "".join(
        c
        for c in "!#$%&'*+.^_`|~0123456789-"
        + "abcdefghijklmnopqrstuvwxyz"
        + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
        if c.lower() not in letters
    )
    alternatives = [
        f"[{letter}{letter.upper()}](?!(?i:{'|'.join(rest)}))"
        for letter, rest in sorted(rests.items())
    ]
    first = "[" + re.escape(other_first) + "]|" + "|".join(alternatives)
    return f"(?:{first})[{_TOKEN_CHARS}]*+:".encode()


# Header names the lean request path leaves to the others: framing, hop-by-hop, what
# the proxy sets itself (forwarding, the request id), Expect, and Host (which it finds
# itself, exactly once).
_REQUEST_NAME = name_other_than(
    "content-length",
    "transfer-encoding",
    "upgrade",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "expect",
    "proxy-",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
    "x-request-id",
    "host",
)
# A header line already in the form the proxy would rebuild it in ("Name: value",
# no other optional whitespace), so that it can be passed on byte for byte.
_CANONICAL_LINE = (
    _REQUEST_NAME + rb" (?:[\x21-\x7e\x80-\xff][\t\x20-\x7e\x80-\xff]*+(?<![ \t]))?\r\n"
)
_LINES = rb"(?:" + _CANONICAL_LINE + rb")*+"
# A plain host name or address and port; any other Host is for the parser path to judge.
_HOST_LINE = rb"(?i:host): ([A-Za-z0-9._:\[\]-]++)\r\n"
# What browsers send: hop-by-hop, so removed before forwarding (it names no other header).
_KEEP_ALIVE_LINE = rb"((?i:connection): (?i:keep-alive)\r\n)"
# A whole body-less HTTP/1.1 request with exactly one Host, at most one
# `Connection: keep-alive` and otherwise only plain headers. Groups: method, target,
# then either (Connection line, Host value) or (Host value, Connection line); the
# Connection line group is None when there is none.
LEAN_REQUEST = re.compile(
    rb"(GET|HEAD|OPTIONS|DELETE) (/[A-Za-z0-9._~:/?#\[\]@!$&'()*+,;=%-]*+) HTTP/1\.1\r\n"
    + _LINES
    + rb"(?:"
    + _KEEP_ALIVE_LINE
    + _LINES
    + _HOST_LINE
    + _LINES
    + rb"|"
    + _HOST_LINE
    + _LINES
    + rb"(?:"
    + _KEEP_ALIVE_LINE
    + _LINES
    + rb")?)\r\n"
)
# Longest request the lean path takes: shorter than every size limit, so none applies.
LEAN_REQUEST_MAX = 8192
# The values of the Cookie lines of a request the lean path took.
COOKIE_VALUES = re.compile(rb"\r\n(?i:cookie): ([^\r\n]*)(?=\r\n)")

# Response header lines the lean path passes on untouched: not framing, not hop-by-hop.
_PLAIN_LINE = (
    rb"\r\n"
    + name_other_than(
        "content-length",
        "connection",
        "transfer-encoding",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-",
    )
    + rb"[\t\x20-\x7e\x80-\xff]*+"
)
_LENGTH_LINE = rb"\r\n(?i:content-length):[ \t]*+(\d{1,15})[ \t]*+"
_CONNECTION_LINE = rb"(\r\n(?i:connection):[ \t]*+(?:(?i:(keep-alive))|(?i:close))[ \t]*+)"
# An HTTP/1.1 2xx-4xx response head with one Content-Length, at most one Connection
# (keep-alive or close) and otherwise only plain lines. Groups: status, then either
# (length, connection line, keep-alive) or (connection line, keep-alive, length);
# the match ends after the blank line.
LEAN_RESPONSE = re.compile(
    rb"HTTP/1\.1 ([2-4]\d\d) [\t\x20-\x7e\x80-\xff]*+(?:"
    + _PLAIN_LINE
    + rb")*+(?:"
    + _LENGTH_LINE
    + rb"(?:"
    + _PLAIN_LINE
    + rb")*+(?:"
    + _CONNECTION_LINE
    + rb"(?:"
    + _PLAIN_LINE
    + rb")*+)?|"
    + _CONNECTION_LINE
    + rb"(?:"
    + _PLAIN_LINE
    + rb")*+"
    + _LENGTH_LINE
    + rb"(?:"
    + _PLAIN_LINE
    + rb")*+)\r\n\r\n"
)


# What the lean path needs of a head LEAN_RESPONSE matched: (end of the head,
# Content-Length, span of the Connection line to cut (0, 0 if none), whether the
# upstream keeps the connection alive).
LeanHead = tuple[int, int, int, int, bool]


def lean_head(match: re.Match[bytes]) -> LeanHead:
    """The LeanHead of a LEAN_RESPONSE match."""
    _, length, line, keep, line_b, keep_b, length_b = match.groups()
    if length is None:
        length, line, keep, group = length_b, line_b, keep_b, 5
    else:
        group = 3
    start, stop = match.span(group) if line is not None else (0, 0)
    return match.end(), int(length), start, stop, line is None or keep is not None


# Heads seen lately and what the lean paths make of them (False: not lean). An app
# server's heads repeat (its Date changes once a second), so does a keep-alive
# client's request; the dict is emptied when full, which bounds it whatever comes.
_MEMO_MAX = 256
_LEAN_MEMO_MAX_REQUEST = 2048
_lean_heads: dict[bytes, LeanHead | Literal[False]] = {}
_lean_requests: dict[bytes, LeanRequest | Literal[False]] = {}

# What the lean request path needs of a request LEAN_REQUEST matched: (method, target,
# the head for the upstream up to its X-Forwarded-For line: the request less its
# `Connection: keep-alive` line and final CRLF, plus X-Forwarded-Host).
LeanRequest = tuple[bytes, bytes, bytes]


def lean_request(data: bytes) -> LeanRequest | None:
    """The LeanRequest of `data` when it is one whole lean request, else None."""
    known = _lean_requests.get(data)
    if known is None:
        match = LEAN_REQUEST.fullmatch(data)
        if match is None:
            known = False
        else:
            method, target, keep_alive_a, host, host_b, keep_alive_b = match.groups()
            if host is None:
                host, cut = host_b, 6 if keep_alive_b is not None else 0
            else:
                cut = 3 if keep_alive_a is not None else 0
            start, stop = match.span(cut) if cut else (len(data) - 2, len(data) - 2)
            known = (
                method,
                target,
                b"".join((data[:start], data[stop:-2], b"X-Forwarded-Host: ", host)),
            )
        if len(data) <= _LEAN_MEMO_MAX_REQUEST:
            if len(_lean_requests) >= _MEMO_MAX:
                _lean_requests.clear()
            _lean_requests[data] = known
    return known or None


def lean_response_head(data: bytes) -> LeanHead | None:
    """The LeanHead of the response head at the start of `data` when LEAN_RESPONSE
    takes it, else None."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = data[: end + 4]
    known = _lean_heads.get(head)
    if known is None:
        match = LEAN_RESPONSE.match(head)
        known = False if match is None else lean_head(match)
        if len(_lean_heads) >= _MEMO_MAX:
            _lean_heads.clear()
        _lean_heads[head] = known
    return known or None


def plain_response_head(data: bytes, end: int) -> bool:
    """Cheap checks that the response head in data[:end] is safe to pass on as it is:
    an HTTP/1.x status line, only CRLF line ends, no folding, no NUL."""
    head = data[:end]
    crlf = head.count(b"\r\n")
    return (
        data[:7] == b"HTTP/1."
        and data[12:13] == b" "
        and data[9:12].isdigit()
        and head.count(b"\n") == crlf
        and head.count(b"\r") == crlf
        and b"\r\n " not in head
        and b"\r\n\t" not in head
        and b"\x00" not in head
    )


# The last chunk of a chunked body (no trailers), and the interim answer to Expect.
CHUNK_END = b"0\r\n\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
