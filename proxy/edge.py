"""What a client connection knows of the listener that accepted it, and the plain
listeners' answer under `redirect_to_https`. Pure: no I/O.

One `Edge` per listener, made by the server before it listens and handed to every
connection it accepts, so that nothing about the scheme is looked up per request: the
scheme the upstream is told (`X-Forwarded-Proto`), the Strict-Transport-Security line of
an ssl listener (`hsts_max_age`), and on a plain listener with `redirect_to_https` the
port of the first ssl listener its answers point to.
"""

from __future__ import annotations

import re

# A request line the redirect understands; anything else gets a 400, never a pass.
_REQUEST_LINE = re.compile(rb"([A-Z]{1,20}) (/[\x21-\x7e]*+) HTTP/1\.[01]\r\n")
_HOST_LINE = re.compile(rb"\r\n(?i:host)[ \t]*+:[ \t]*+([^\r\n]*?)[ \t]*+(?=\r\n)")
# A host name or IPv4 address, or a bracketed IPv6 address, and an optional port.
_HOST = re.compile(rb"([A-Za-z0-9._-]++|\[[0-9A-Fa-f:.]++\])(?::[0-9]{1,5})?")
_BODY = (
    b"<html>\r\n<head><title>301 Moved Permanently</title></head>\r\n"
    b"<body>\r\n<center><h1>301 Moved Permanently</h1></center>\r\n</body>\r\n</html>\r\n"
)


class Edge:
    """The listener side of a client connection: its scheme and what it adds to answers."""

    __slots__ = ("hsts", "https", "redirect_port", "scheme")

    def __init__(self, *, https: bool, hsts_max_age: int = 0, redirect_port: int = 0) -> None:
        self.https = https
        self.scheme = b"https" if https else b"http"
        # A header line without its CRLF, led by one: spliced in before a head's end.
        self.hsts = (
            b"\r\nStrict-Transport-Security: max-age=%d" % hsts_max_age
            if https and hsts_max_age
            else b""
        )
        # Set on a plain listener with redirect_to_https: where its 301s point.
        self.redirect_port = 0 if https else redirect_port


PLAIN = Edge(https=False)


def redirect_answer(
    head: bytes, *, port: int, default_host: bytes, exempt: tuple[bytes, bytes] | None
) -> bytes | None:
    """The answer of a redirecting plain listener to the request head `head` (through its
    blank line): a 301 to the same host and target on `https://host[:port]`, a 400 for a
    request it cannot read, or None for a request it lets through: a GET or HEAD under the
    status prefix (exempt[0], ending in "/") or for the health path (exempt[1]); with
    `exempt` None every request is redirected.

    `default_host` stands in for an HTTP/1.0 request without Host (the listener's address).
    """
    match = _REQUEST_LINE.match(head)
    if match is None:
        return _answer(b"400 Bad Request", b"", head_only=False)
    method, target = match.groups()
    if exempt is not None and method in (b"GET", b"HEAD"):
        path = target.partition(b"?")[0]
        if target.startswith(exempt[0]) or path == exempt[1]:
            return None
    host_line = _HOST_LINE.search(head, match.end() - 2)
    host = host_line.group(1) if host_line is not None else default_host
    host_match = _HOST.fullmatch(host)
    if host_match is None:
        return _answer(b"400 Bad Request", b"", head_only=method == b"HEAD")
    name = host_match.group(1)
    location = b"https://" + name + (b":%d" % port if port != 443 else b"") + target
    return _answer(b"301 Moved Permanently", location, head_only=method == b"HEAD")


def _answer(status: bytes, location: bytes, *, head_only: bool) -> bytes:
    body = _BODY if location else b"400 Bad Request: not an HTTP request this port can redirect\n"
    kind = b"text/html" if location else b"text/plain; charset=utf-8"
    return b"".join(
        (
            b"HTTP/1.1 ",
            status,
            b"\r\nLocation: " + location if location else b"",
            b"\r\nContent-Type: ",
            kind,
            b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body),
            b"" if head_only else body,
        )
    )
