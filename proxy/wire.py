"""Bytes on the wire: size limits and the fast paths' strict patterns. Pure: no I/O.

The fast paths take a whole, simple message from one read without the llhttp
parser and its per-header callbacks. What they accept is a strict subset of
what llhttp accepts; anything else goes through the parser (and its errors).
"""

from __future__ import annotations

import re

# Longest request target (414 beyond) and header block (431 beyond), as nginx's
# large_client_header_buffers 4 8k allow.
MAX_TARGET = 8192
MAX_HEADER_BYTES = 32768
# Write buffer high-water mark of every transport: beyond it, the other side pauses.
WRITE_HIGH = 256 * 1024

_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_FIELD = _TOKEN + rb":[ \t]*[\t\x20-\x7e\x80-\xff]*"
SIMPLE_REQUEST = re.compile(
    rb"(GET|HEAD|OPTIONS|DELETE) (/[A-Za-z0-9._~:/?#\[\]@!$&'()*+,;=%-]*) HTTP/1\.1\r\n((?:"
    + _FIELD
    + rb"\r\n)*)\r\n"
)
HEADER_FIELD = re.compile(rb"(" + _TOKEN + rb"):[ \t]*([\t\x20-\x7e\x80-\xff]*?)[ \t]*\r\n")
BODY_OR_UPGRADE = re.compile(rb"^(?:content-length|transfer-encoding|upgrade)[ \t]*:", re.I | re.M)


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
