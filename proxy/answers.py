"""The proxy's own answers: short plain-text errors and whole responses. Pure."""

from __future__ import annotations

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
