"""The records the proxy's I/O layer shares, and the two interfaces between its sides.

`Upstream` and `UpstreamSet` (every app server, its health, statistics and idle
connections), `Exchange` (one client request on its way through), `Shared` (what
every connection reads: settings, the clock, the pool). `UpstreamLink` is an
upstream connection as the client side uses it; `ResponseSink` is the client side
as an upstream connection reports to it. Nothing here does I/O or imports a module
that does: the asyncio protocols (client.py, upstream.py) sit above.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from proxy.access_log import AccessLog, RequestIds
from proxy.balancer import Balancer
from proxy.cluster import ClusterView
from proxy.health import EventLog, UpstreamHealth
from proxy.request_head import PreparedRequest
from proxy.settings import ProxySettings, UpstreamSpec
from proxy.stats import UpstreamStats
from proxy.wire import LeanHead


class ResponseSink(Protocol):
    """What an upstream connection reports to: the client side of its exchange."""

    def lean_response(self, conn: UpstreamLink, data: bytes, head: LeanHead) -> bool:
        """A whole plain response in `data`, its head described by `head`: taken?"""

    def whole_response(self, conn: UpstreamLink, status: int, head: bytes, body: bytes) -> bool:
        """A whole sized response from one read, head checked plain: taken?"""

    def response_head(self, conn: UpstreamLink, status: int, head: bytes) -> None: ...

    def response_body(self, body: bytes) -> None: ...

    def response_complete(self, conn: UpstreamLink, reusable: bool = True) -> None: ...

    def response_failed(self, conn: UpstreamLink, kind: str, cause: str) -> None: ...

    def answer_lines(self, ex: Exchange) -> bytes:
        """The header lines every answer to `ex` carries (X-Request-ID, HSTS), each led
        by CRLF."""


class ClientFlow(Protocol):
    """The client connection's transport and flow control, as an upstream connection
    uses them (relay.py has it)."""

    def begin_read(self) -> None:
        """An upstream read is about to be parsed: collect the writes it causes."""

    def flush(self) -> None:
        """Write what the last upstream read produced, in one go."""

    def write(self, data: bytes) -> None: ...

    def upstream_paused(self, paused: bool) -> None:
        """The upstream stopped (or resumed) taking the request body."""

    def request_complete(self) -> bool: ...

    def close(self) -> None: ...


class UpstreamLink(Protocol):
    """One connection to an upstream, as the client side uses it (upstream.py has it)."""

    closed: bool
    # Taken from the pool (not new), and whether it has answered anything since.
    reused: bool
    got_bytes: bool
    # When an idle connection is retired (keepalive_timeout).
    idle_deadline: float
    # proxy_read_timeout's deadline (0: none); moved by the client side's flow control.
    read_deadline: float
    # Set when the response head says how the body ends.
    until_close: bool
    upstream_keep_alive: bool

    def attach(self, sink: ResponseSink, flow: ClientFlow, read_deadline: float) -> None: ...

    def detach(self) -> None: ...

    def send(self, data: bytes) -> None: ...

    def send_lines(self, chunks: list[bytes]) -> None: ...

    def start_tunnel(self, client: Any) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self, read_deadline: float = 0.0) -> None: ...

    def close(self) -> None: ...


class Upstream:
    """One app server: its health, statistics and idle keep-alive connections."""

    __slots__ = ("health", "idle", "spec", "stats")

    def __init__(self, spec: UpstreamSpec, health: UpstreamHealth) -> None:
        self.spec = spec
        self.health = health
        self.stats = UpstreamStats()
        # Most recently released last (nginx's keepalive cache is LIFO too).
        self.idle: list[UpstreamLink] = []


class UpstreamSet:
    """Every upstream, by name, and the balancer over them."""

    def __init__(self, settings: ProxySettings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.events = EventLog()
        # What the app servers' health answers tell of the cluster (status page).
        self.cluster = ClusterView()
        self.by_name: dict[str, Upstream] = {}
        for spec in settings.upstreams:
            self.by_name[spec.name] = Upstream(spec, self.new_health(spec.name))
        self.balancer = Balancer(
            [(spec.name, spec.weight) for spec in settings.upstreams],
            policy=settings.policy,
            health_of=lambda name: self.by_name[name].health,
        )

    def new_health(self, name: str, *, admitted: bool = True) -> UpstreamHealth:
        settings = self.settings
        return UpstreamHealth(
            name,
            log=self.events,
            max_fails=settings.max_fails,
            fail_timeout=settings.fail_timeout,
            fall=settings.fall,
            rise=settings.rise,
            admitted=admitted,
        )


class Connector(Protocol):
    """The connection pool (pool.py), as the client side uses it."""

    def connect(
        self,
        upstream: Upstream,
        ex: Exchange,
        connected: Callable[[Exchange, UpstreamLink], None],
        failed: Callable[[Exchange, Upstream, str, str], None],
    ) -> None: ...

    def release(self, conn: UpstreamLink, *, reusable: bool) -> None: ...


class Shared:
    """What every client connection reads: settings as plain attributes, the clock, the
    pool, counters. One object, so that the hot path looks each up once."""

    pool: Connector  # set by the server once the pool is built around this record

    def __init__(
        self,
        upstreams: UpstreamSet,
        *,
        local_response: Callable[[bytes, bytes, bool], tuple[bytes, bool]],
        now: float,
    ) -> None:
        settings = self.settings = upstreams.settings
        self.upstreams = upstreams.by_name
        self.balancer = upstreams.balancer
        self.clock = upstreams.clock
        self.local_response = local_response
        # The status page's live updates (status_stream.py), once the server sets them.
        self.status_events_path = b""
        self.subscribe_status: Callable[[Any, bool], None] | None = None
        self.status_prefix = settings.status_prefix.encode() + b"/"
        self.sticky = settings.policy == "sticky"
        self.cookie_name = settings.session_cookie_name
        # A request without these bytes carries no session cookie.
        self.cookie_marker = self.cookie_name.encode("latin-1")
        self.real_ip_header = settings.real_ip_header.lower().encode()
        self.tries_limit = settings.tries_limit
        self.read_timeout = settings.proxy_read_timeout
        self.keepalive_timeout = settings.keepalive_timeout
        self.keepalive = settings.keepalive
        # The loop's clock, refreshed by the ticker: deadlines are compared to it.
        self.now = now
        self.retries = 0
        self.request_ids = RequestIds()
        self.access_log: AccessLog | None = None  # access_log = off
        self.accepted = 0  # client connections, since the start
        # Client connections (server.py walks them for deadlines and shutdown).
        self.clients: set[Any] = set()


class Exchange:
    """One client request on its way through the proxy."""

    __slots__ = (
        "body_bytes",
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
        "log_head",
        "method",
        "prepared",
        "request_complete",
        "request_id_line",
        "response_started",
        "route",
        "sent",
        "stale_retry",
        "started",
        "status",
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
        # b"\r\nX-Request-ID: <id>" (the proxy's own id or a trusted peer's, nginx's
        # $request_id; access_log.ID_LINE bytes before the id), or b"" for none.
        self.request_id_line = b""

        # For the access log only: the request head as it came (its line, Referer,
        # User-Agent), the response's status and body bytes.
        self.log_head = b""
        self.status = 0
        self.body_bytes = 0
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
        self.conn: UpstreamLink | None = None
        self.tried: list[str] = []
        self.sent = False
        self.stale_retry = False
        self.response_started = False
        self.framing = "none"
        self.tunnel = False
        self.expect_continue = False
        self.started = time.perf_counter()
