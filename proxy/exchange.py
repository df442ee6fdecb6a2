"""One client request on its way through the proxy: what both sides of it share."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from proxy.message import PreparedRequest
    from proxy.server import Upstream
    from proxy.upstream import UpstreamConnection


class Exchange:
    """One client request on its way through the proxy."""

    __slots__ = (
        "body_chunks",
        "body_size",
        "buffered",
        "conn",
        "expect_continue",
        "framing",
        "head",
        "head_only",
        "http11",
        "keep_alive",
        "lean",
        "local",
        "method",
        "prepared",
        "request_complete",
        "response_started",
        "route",
        "sent",
        "stale_retry",
        "started",
        "target",
        "tried",
        "tunnel",
        "upstream",
    )

    def __init__(self, method: bytes, target: bytes, http11: bool, keep_alive: bool) -> None:
        self.method = method
        self.target = target
        self.http11 = http11
        self.keep_alive = keep_alive
        self.head_only = method == b"HEAD"
        self.prepared: PreparedRequest | None = None
        # What is sent upstream before any body.
        self.head = b""
        # A keep-alive HTTP/1.1 exchange whose response the lean path may take whole.
        self.lean = False
        self.local = False
        self.route: str | None = None
        self.body_chunks: list[bytes] = []
        self.body_size = 0
        self.buffered = 0
        self.request_complete = False
        self.upstream: Upstream | None = None
        self.conn: UpstreamConnection | None = None
        self.tried: list[str] = []
        self.sent = False
        self.stale_retry = False
        self.response_started = False
        self.framing = "none"
        self.tunnel = False
        self.expect_continue = False
        self.started = time.perf_counter()
