"""The running proxy: listening socket, upstream set, ticker and health checkers."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from proxy.balancer import Balancer
from proxy.checker import check_upstream
from proxy.client import ClientConnection
from proxy.forward import Forwarder
from proxy.health import EventLog, UpstreamHealth
from proxy.message import simple_response
from proxy.resolver import Resolver, UpstreamDiscovery, getaddrinfo_resolver
from proxy.settings import ProxySettings, UpstreamSpec
from proxy.stats import UpstreamStats
from proxy.status import clock_text, render_html, render_json, render_metrics
from proxy.upstream import UpstreamConnection

_TICK = 0.1


class Upstream:
    """One app server: its health, statistics and idle keep-alive connections."""

    __slots__ = ("health", "idle", "spec", "stats")

    def __init__(self, spec: UpstreamSpec, health: UpstreamHealth) -> None:
        self.spec = spec
        self.health = health
        self.stats = UpstreamStats()
        self.idle: list[UpstreamConnection] = []


class UpstreamSet:
    """Every upstream, the balancer over them, and the views the status pages show."""

    def __init__(self, settings: ProxySettings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.events = EventLog()
        self.by_name: dict[str, Upstream] = {}
        for spec in settings.upstreams:
            health = UpstreamHealth(
                spec.name,
                log=self.events,
                max_fails=settings.max_fails,
                fail_timeout=settings.fail_timeout,
                fall=settings.fall,
                rise=settings.rise,
            )
            self.by_name[spec.name] = Upstream(spec, health)
        self.balancer = Balancer(
            [(spec.name, spec.weight) for spec in settings.upstreams],
            policy=settings.policy,
            health_of=lambda name: self.by_name[name].health,
        )
        self.client_connections: Callable[[], int] = lambda: 0
        self.retries: Callable[[], int] = lambda: 0
        self.discovery_status: Callable[[], dict[str, Any]] = dict  # dns: upstreams only
        self._status = settings.status_prefix.encode()

    def note_failure(self, upstream: Upstream, cause: str) -> None:
        """Hook for failures seen while forwarding (the health state already has them)."""

    def snapshot(self) -> dict[str, Any]:
        now = self.clock()
        upstreams = []
        for upstream in self.by_name.values():
            stats = upstream.stats
            p50 = stats.percentile(0.5)
            p99 = stats.percentile(0.99)
            up = upstream.health.available(now)
            upstreams.append(
                {
                    "name": upstream.spec.name,
                    "address": upstream.spec.address,
                    "weight": upstream.spec.weight,
                    "state": upstream.health.state(now),
                    "up": up,
                    "reason": upstream.health.reason if not up else "",
                    "active": stats.active,
                    "idle_connections": len(upstream.idle),
                    "requests": stats.requests,
                    "failures": stats.failures,
                    "retries": stats.retries,
                    "p50_ms": None if p50 is None else round(p50 * 1000, 3),
                    "p99_ms": None if p99 is None else round(p99 * 1000, 3),
                    "history": [[round(at, 1), count] for at, count in stats.history],
                }
            )
        events = [
            {
                "time": event.at,
                "upstream": event.upstream,
                "change": event.change,
                "reason": event.reason,
                "text": event.describe(clock_text(event.at)),
            }
            for event in self.events
        ]
        return {
            "policy": self.settings.policy,
            "time": now,
            "client_connections": self.client_connections(),
            "retries": self.retries(),
            "upstreams": upstreams,
            "events": events,
            **self.discovery_status(),
        }

    def local_response(self, method: bytes, target: bytes, keep_alive: bool) -> tuple[bytes, bool]:
        """Answer for a request under the status prefix."""
        path = target.split(b"?", 1)[0]
        head_only = method == b"HEAD"
        if method not in (b"GET", b"HEAD"):
            body = b"only GET and HEAD here\n"
            return simple_response(405, "text/plain", body, keep_alive=False), False
        if path == self._status + b"/status.json":
            content_type, body = "application/json", render_json(self.snapshot())
        elif path == self._status + b"/metrics":
            content_type = "text/plain; version=0.0.4; charset=utf-8"
            body = render_metrics(self.snapshot())
        elif path in (self._status + b"/status", self._status + b"/status/"):
            content_type, body = (
                "text/html; charset=utf-8",
                render_html(self.settings.status_prefix),
            )
        else:
            content_type, body = "text/plain", b"not found\n"
            return (
                simple_response(
                    404, content_type, body, keep_alive=keep_alive, head_only=head_only
                ),
                keep_alive,
            )
        response = simple_response(
            200, content_type, body, keep_alive=keep_alive, head_only=head_only
        )
        return response, keep_alive


class ProxyServer:
    """`async with ProxyServer(settings) as proxy:` listens until closed."""

    def __init__(
        self,
        settings: ProxySettings,
        *,
        clock: Callable[[], float] = time.time,
        resolver: Resolver = getaddrinfo_resolver,
    ) -> None:
        self.settings = settings
        self._resolver = resolver
        self.upstreams = UpstreamSet(settings, clock)
        self._server: asyncio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._forwarder: Forwarder | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        forwarder = Forwarder(
            self.upstreams, status_prefix=self.settings.status_prefix.encode() + b"/"
        )
        self._forwarder = forwarder
        self.upstreams.client_connections = lambda: sum(
            isinstance(conn, ClientConnection) for conn in forwarder.connections
        )
        self.upstreams.retries = lambda: forwarder.retries
        self._server = await loop.create_server(
            lambda: ClientConnection(forwarder),
            self.settings.listen_host,
            self.settings.listen_port,
            reuse_address=True,
            backlog=1024,
        )
        self._tasks.append(loop.create_task(self._tick()))
        if self.settings.health_interval > 0:
            for upstream in self.upstreams.by_name.values():
                self._tasks.append(loop.create_task(self._check(upstream)))
        # dns: upstreams come and go; their health checks run in the discovery task.
        if self.settings.discovery is not None:
            tries_for = self.settings.tries_for

            def routable_changed(count: int) -> None:
                forwarder.tries_limit = tries_for(count)

            discovery = UpstreamDiscovery(
                self.upstreams,
                target=self.settings.discovery,
                make_upstream=Upstream,
                resolver=self._resolver,
                on_change=routable_changed,
            )
            self.upstreams.discovery_status = discovery.status
            self._tasks.append(loop.create_task(discovery.run()))

    async def _tick(self) -> None:
        forwarder = self._forwarder
        assert forwarder is not None
        next_second = time.monotonic() + 1.0
        upstreams = self.upstreams
        while True:
            await asyncio.sleep(_TICK)
            forwarder.tick()
            now = upstreams.clock()
            for upstream in upstreams.by_name.values():
                if upstream.health.out_until:  # the end of a passive out-time, on time
                    upstream.health.tick(now)
            if time.monotonic() >= next_second:
                next_second += 1.0
                for upstream in upstreams.by_name.values():
                    upstream.stats.sample_second(now)

    async def _check(self, upstream: Upstream) -> None:
        settings = self.settings
        clock = self.upstreams.clock
        while True:
            started = clock()
            ok, reason = await check_upstream(
                upstream.spec, settings.health_path, settings.health_timeout
            )
            upstream.health.record_check(clock(), ok, reason, started=started)
            await asyncio.sleep(settings.health_interval)

    async def close(self, grace: float = 5.0) -> None:
        """Stop accepting, let requests in flight finish (up to `grace` seconds), close all."""
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._forwarder is not None:
            await self._forwarder.close(grace)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> ProxyServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close(grace=1.0)
