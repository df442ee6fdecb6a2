"""DNS discovery of upstreams ("dns:NAME:PORT"), the way nginx's `resolver ... valid=`
and HAProxy's `server-template` with `resolvers` do it: the name is resolved at start
and then every `resolver_valid` seconds (the event loop's getaddrinfo, under a timeout).

An address that appears is added "checking" and gets traffic once its health check
(GET health_path answered 200) passes; the check also reports the app server's route,
which becomes the upstream's name. An address that disappears is drained: no new
requests, requests in flight finish, then it leaves the balancer and the status page.
A name that does not resolve, resolves to nothing, or whose resolver fails or hangs
changes nothing (the last known set stays, as nginx keeps it); one log line says so,
once per change of the problem, and the status shows "degraded". The pure part is in
membership.py.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

from proxy.checker import probe_upstream
from proxy.health import Change, HealthEvent, UpstreamHealth
from proxy.membership import Membership, ProblemLatch, usable_addresses
from proxy.records import Upstream, UpstreamSet
from proxy.settings import DnsTarget, UpstreamSpec

log = logging.getLogger("proxy")

Resolver = Callable[[str], Awaitable[Sequence[str]]]
"""name -> the IP addresses it resolves to right now (raises OSError when it does not)."""

RESOLVE_TIMEOUT = 5.0  # seconds one resolution may take (nginx's resolver_timeout is 30 s)
DRAIN_POLL = 0.1  # seconds between looks at the requests still in flight on drained upstreams


async def getaddrinfo_resolver(name: str) -> list[str]:
    """Every distinct IPv4 and IPv6 address of `name`, in the resolver's order."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        name, None, family=socket.AF_UNSPEC, type=socket.SOCK_STREAM
    )
    return usable_addresses(str(sockaddr[0]) for *_, sockaddr in infos)


class UpstreamDiscovery:
    """Keeps an `UpstreamSet` (its `by_name` and balancer) in step with a DNS name."""

    def __init__(
        self,
        upstreams: UpstreamSet,
        *,
        target: DnsTarget,
        resolver: Resolver = getaddrinfo_resolver,
        resolve_timeout: float = RESOLVE_TIMEOUT,
        on_change: Callable[[int], None] = lambda routable: None,
    ) -> None:
        self.set = upstreams
        self.settings = upstreams.settings
        self.target = target
        self.resolver = resolver
        self.resolve_timeout = resolve_timeout
        self.on_change = on_change
        self.membership = Membership(target.port)
        self.resolutions = 0
        self.failures = 0
        self.resolved_at: float | None = None
        self._problem = ProblemLatch()
        self._by_host: dict[str, Upstream] = {}
        self._checks: dict[str, asyncio.Task[None]] = {}

    # -- the loop ----------------------------------------------------------------
    async def run(self) -> None:
        """Resolve now and every `resolver_valid` seconds until cancelled."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    await self.refresh()
                except Exception:  # a bug must not end discovery for good
                    log.exception("upstreams %s: discovery round failed", self.target.label)
                next_round = loop.time() + self.settings.resolver_valid
                while (left := next_round - loop.time()) > 0:
                    draining = any(m.gone for m in self.membership.members.values())
                    await asyncio.sleep(min(left, DRAIN_POLL) if draining else left)
                    self.reap()
        finally:
            checks = list(self._checks.values())
            self._checks.clear()
            for task in checks:
                task.cancel()
            await asyncio.gather(*checks, return_exceptions=True)

    async def refresh(self) -> None:
        """One round: resolve, add the new addresses (checking), drain the vanished ones."""
        hosts = await self._resolve()
        if hosts is None:
            return
        change = self.membership.resolved(hosts)
        now = self.set.clock()
        for host in change.added:
            self._add(host, now)
        for host in change.removed:
            self._drain(host, now)
        self._reconcile(now)
        self.reap()

    async def _resolve(self) -> list[str] | None:
        label, name = self.target.label, self.target.name
        self.resolutions += 1
        try:
            async with asyncio.timeout(self.resolve_timeout):
                answers = await self.resolver(name)
        except TimeoutError:
            self._failed(f"no answer from the resolver within {self.resolve_timeout:g}s")
            return None
        except OSError as error:  # socket.gaierror: NXDOMAIN, no data, resolver down
            self._failed(f"{name!r} does not resolve ({error.strerror or error})")
            return None
        except Exception as error:
            self._failed(f"resolver failed ({type(error).__name__}: {error})")
            return None
        hosts = usable_addresses(answers)
        if not hosts:
            self._failed(f"{name!r} resolves to no address")
            return None
        self.resolved_at = self.set.clock()
        if self._problem.report(None):
            log.info("upstreams %s resolves again: %s", label, ", ".join(hosts))
            self._event(label, "DNS", f"resolves again: {', '.join(hosts)}")
        return hosts

    def _failed(self, problem: str) -> None:
        self.failures += 1
        if self._problem.report(problem):
            known = len(self.membership.live)
            keeping = (
                f"keeping the {known} known address{'' if known == 1 else 'es'}"
                if known
                else "no upstreams until it resolves (clients get 502)"
            )
            log.warning("upstreams %s: %s; %s", self.target.label, problem, keeping)
            self._event(self.target.label, "DNS", f"{problem}; {keeping}")

    # -- membership changes ------------------------------------------------------
    def _new_health(self, name: str) -> UpstreamHealth:
        return self.set.new_health(name, admitted=False)

    def _add(self, host: str, now: float) -> None:
        address = self.membership.members[host].address
        upstream = self._by_host.get(host)
        if upstream is None:
            upstream = Upstream(
                UpstreamSpec(name=address, host=host, port=self.target.port),
                self._new_health(address),
            )
            self._by_host[host] = upstream
            self.set.by_name[address] = upstream
            verb = "appeared"
        else:  # back while draining: checked again before it takes traffic
            upstream.health = self._new_health(upstream.spec.name)
            verb = "is back"
        self._event(upstream.spec.name, "ADDED", f"{address} {verb} in {self.target.label}")
        log.info(
            "upstream %s %s in %s: checking %s before it takes traffic",
            address,
            verb,
            self.target.label,
            self.settings.health_path,
        )
        self._checks[host] = asyncio.get_running_loop().create_task(self._check_loop(host))

    def _drain(self, host: str, now: float) -> None:
        upstream = self._by_host[host]
        task = self._checks.pop(host, None)
        if task is not None:
            task.cancel()
        self.set.balancer.remove(upstream.spec.name)
        upstream.health.hold(now, "draining", f"gone from {self.target.label}")
        self._close_idle(upstream)
        log.info(
            "upstream %s (%s) is gone from %s: draining, %d request(s) in flight",
            upstream.spec.name,
            upstream.spec.address,
            self.target.label,
            upstream.stats.active,
        )

    def reap(self) -> None:
        """Remove drained upstreams whose last request in flight has finished."""
        for host, member in list(self.membership.members.items()):
            upstream = self._by_host[host]
            if not member.gone or upstream.stats.active > 0:
                continue
            self._close_idle(upstream)
            name = upstream.spec.name
            if self.set.by_name.get(name) is upstream:
                del self.set.by_name[name]
            self.membership.forget(host)
            del self._by_host[host]
            self._event(name, "REMOVED", f"{upstream.spec.address} drained")
            log.info("upstream %s (%s) drained and removed", name, upstream.spec.address)

    @staticmethod
    def _close_idle(upstream: Upstream) -> None:
        for conn in list(upstream.idle):
            conn.close()
        upstream.idle.clear()

    # -- health checks -----------------------------------------------------------
    async def _check_loop(self, host: str) -> None:
        settings = self.settings
        while True:
            started = self.set.clock()
            passed, reason, route = await probe_upstream(
                host, self.target.port, settings.health_path, settings.health_timeout
            )
            try:
                self.checked(host, passed, reason, route, started=started)
            except Exception:  # a bug must not stop this address's checks for good
                log.exception("upstream %s: recording a health check failed", host)
            await asyncio.sleep(settings.health_interval)

    def checked(
        self,
        host: str,
        passed: bool,
        reason: str,
        route: str | None,
        *,
        started: float | None = None,
    ) -> None:
        """Record one health check of `host` (begun at `started`): admission, route, up/down."""
        upstream = self._by_host.get(host)
        member = self.membership.members.get(host)
        if upstream is None or member is None or member.gone:
            return
        now = self.set.clock()
        admitted = upstream.health.admitted
        upstream.health.record_check(now, passed, reason, started=started)
        if passed:
            self.membership.learned(host, route)
        if not admitted and upstream.health.admitted:
            log.info(
                "upstream %s passed its health check (route %s): takes traffic",
                member.address,
                route or "none reported",
            )
        self._reconcile(now)

    # -- applying names and rotation --------------------------------------------
    def _reconcile(self, now: float) -> None:
        """Bring names, holds and balancer membership in line with the membership."""
        by_name, balancer = self.set.by_name, self.set.balancer
        names = self.membership.names()
        rivals = self.membership.rivals()
        renamed: list[tuple[Upstream, str, str]] = []
        # Two passes, so that a route can move from one address to another at once.
        for host, upstream in self._by_host.items():
            old, new = upstream.spec.name, names[host]
            if old != new:
                if by_name.get(old) is upstream:
                    del by_name[old]
                balancer.remove(old)
                renamed.append((upstream, old, new))
        for upstream, old, new in renamed:
            upstream.spec = replace(upstream.spec, name=new)
            by_name[new] = upstream
            address = upstream.spec.address
            why = f"{address} carries route {new}" if new != address else f"{address} was {old}"
            upstream.health.rename(now, new, why)
            log.info("upstream %s is now named %s (%s)", old, new, why)
        for host, upstream in self._by_host.items():
            member = self.membership.members[host]
            rival = rivals.get(host)
            health = upstream.health
            if member.gone:
                routable = False
            elif rival is not None:
                if health.state(now) != "conflict":
                    why = f"route {member.route} is claimed by newer {rival.address}"
                    log.warning(
                        "upstreams %s: %s and %s both report route %s; keeping the newest, %s",
                        self.target.label,
                        member.address,
                        rival.address,
                        member.route,
                        rival.address,
                    )
                    health.hold(now, "conflict", why)
                routable = False
            else:
                health.hold(now, None)
                routable = health.admitted
            name = upstream.spec.name
            if routable and name not in balancer:
                balancer.add(name, upstream.spec.weight)
            elif not routable and name in balancer:
                balancer.remove(name)
        self.on_change(len(balancer))

    def _event(self, upstream: str, change: Change, reason: str) -> None:
        self.set.events.add(HealthEvent(self.set.clock(), upstream, change, reason))

    # -- status ------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Top-level fields of status.json: overall status and the discovery state."""
        now = self.set.clock()
        taking_traffic = [
            upstream.spec.name
            for upstream in self._by_host.values()
            if upstream.spec.name in self.set.balancer and upstream.health.available(now)
        ]
        problem = self._problem.problem
        degraded = problem is not None or not taking_traffic
        return {
            "status": "degraded" if degraded else "ok",
            "discovery": {
                "target": self.target.label,
                "resolver_valid": self.settings.resolver_valid,
                "problem": problem or (None if taking_traffic else "no upstream available"),
                "addresses": self.membership.live,
                "resolved_at": self.resolved_at,
                "resolutions": self.resolutions,
                "failures": self.failures,
            },
        }
