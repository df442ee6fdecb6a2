"""DNS discovery of upstreams ("dns:NAME:PORT"), the way nginx's `resolver ... valid=`
and HAProxy's `server-template` with `resolvers` do it: the name is resolved at start
and then every `resolver_valid` seconds (the event loop's getaddrinfo, under a timeout).

An address that appears is added "checking" and gets traffic once its health check
(GET health_path answered 200) passes; the check also reports the app server's route,
which becomes the upstream's name. An address that disappears is drained: no new
requests, requests in flight finish, then it leaves the balancer and the status page.
A name that does not resolve, resolves to nothing, or whose resolver fails or hangs
changes nothing (the last known set stays, as nginx keeps it); one log line says so,
once per change of the problem (netnames.NameWatch), and the status shows "degraded".
What a resolution and a check change in the upstream set is discovered.py's; the pure
rules are membership.py's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from netnames import NameWatch, Resolver, getaddrinfo_resolver
from netnames.watch import RESOLVE_TIMEOUT
from proxy.checker import check_health
from proxy.discovered import DiscoveredUpstreams
from proxy.health import HealthEvent
from proxy.records import UpstreamSet
from proxy.settings import DnsTarget

log = logging.getLogger("proxy")

DRAIN_POLL = 0.1  # seconds between looks at the requests still in flight on drained upstreams


class UpstreamDiscovery:
    """Resolves a DNS name every `resolver_valid` seconds and health-checks its addresses;
    what that changes goes to `DiscoveredUpstreams`."""

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
        self.watch = NameWatch(
            target.name,
            resolver=resolver,
            timeout=resolve_timeout,
            on_problem=self._problem_found,
            on_recovered=self._recovered,
        )
        self.upstreams = DiscoveredUpstreams(
            upstreams,
            target,
            start_checks=self._start_checks,
            stop_checks=self._stop_checks,
            on_change=on_change,
        )
        self.resolved_at: float | None = None
        self._checks: dict[str, asyncio.Task[None]] = {}

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
                    draining = self.upstreams.draining
                    await asyncio.sleep(min(left, DRAIN_POLL) if draining else left)
                    self.upstreams.reap()
        finally:
            checks = list(self._checks.values())
            self._checks.clear()
            for task in checks:
                task.cancel()
            await asyncio.gather(*checks, return_exceptions=True)

    async def refresh(self) -> None:
        """One round: resolve, then add the new addresses and drain the vanished ones."""
        hosts = await self.watch.resolve()
        if hosts is not None:
            self.resolved_at = self.set.clock()
            self.upstreams.resolved(hosts)

    def _problem_found(self, problem: str) -> None:
        known = len(self.upstreams.membership.live)
        keeping = (
            f"keeping the {known} known address{'' if known == 1 else 'es'}"
            if known
            else "no upstreams until it resolves (clients get 502)"
        )
        log.warning("upstreams %s: %s; %s", self.target.label, problem, keeping)
        self._event(f"{problem}; {keeping}")

    def _recovered(self, hosts: list[str]) -> None:
        log.info("upstreams %s resolves again: %s", self.target.label, ", ".join(hosts))
        self._event(f"resolves again: {', '.join(hosts)}")

    def _event(self, reason: str) -> None:
        self.set.events.add(HealthEvent(self.set.clock(), self.target.label, "DNS", reason))

    # -- health checks -----------------------------------------------------------
    def _start_checks(self, host: str) -> None:
        self._checks[host] = asyncio.get_running_loop().create_task(self._check_loop(host))

    def _stop_checks(self, host: str) -> None:
        task = self._checks.pop(host, None)
        if task is not None:
            task.cancel()

    async def _check_loop(self, host: str) -> None:
        settings = self.settings
        while True:
            started = self.set.clock()
            check = await check_health(
                host, self.target.port, settings.health_path, settings.health_timeout, exact=True
            )
            try:
                self.upstreams.checked(
                    host,
                    check.passed,
                    check.reason,
                    check.route,
                    started=started,
                    report=check.report,
                )
            except Exception:  # a bug must not stop this address's checks for good
                log.exception("upstream %s: recording a health check failed", host)
            await asyncio.sleep(settings.health_interval)

    # -- status ------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Top-level fields of status.json: overall status and the discovery state."""
        taking_traffic = self.upstreams.taking_traffic(self.set.clock())
        problem = self.watch.problem
        degraded = problem is not None or not taking_traffic
        return {
            "status": "degraded" if degraded else "ok",
            "discovery": {
                "target": self.target.label,
                "resolver_valid": self.settings.resolver_valid,
                "problem": problem or (None if taking_traffic else "no upstream available"),
                "addresses": self.upstreams.membership.live,
                "resolved_at": self.resolved_at,
                "resolutions": self.watch.resolutions,
                "failures": self.watch.failures,
            },
        }
