"""dns: upstreams in the upstream set: who joins (checked before it takes traffic), who
drains (no new requests; removed once its requests in flight are done), which one
carries which route. No I/O: discovery.py resolves, runs the health checks and feeds
their results in; the pure rules are in membership.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from proxy.health import Change, HealthEvent
from proxy.membership import Membership
from proxy.records import Upstream, UpstreamSet
from proxy.settings import DnsTarget, UpstreamSpec

log = logging.getLogger("proxy")


class DiscoveredUpstreams:
    """Keeps an `UpstreamSet` (its `by_name` and balancer) in step with a DNS name's
    addresses and the routes their health checks report."""

    def __init__(
        self,
        upstreams: UpstreamSet,
        target: DnsTarget,
        *,
        start_checks: Callable[[str], None],
        stop_checks: Callable[[str], None],
        on_change: Callable[[int], None],
    ) -> None:
        self.set = upstreams
        self.settings = upstreams.settings
        self.target = target
        self.start_checks = start_checks
        self.stop_checks = stop_checks
        self.on_change = on_change
        self.membership = Membership(target.port)
        self.by_host: dict[str, Upstream] = {}

    def resolved(self, hosts: list[str]) -> None:
        """Apply one resolution: add the new addresses (checking), drain the vanished."""
        change = self.membership.resolved(hosts)
        now = self.set.clock()
        for host in change.added:
            self._add(host, now)
        for host in change.removed:
            self._drain(host, now)
        self._reconcile(now)
        self.reap()

    @property
    def draining(self) -> bool:
        return any(member.gone for member in self.membership.members.values())

    def taking_traffic(self, now: float) -> list[str]:
        return [
            upstream.spec.name
            for upstream in self.by_host.values()
            if upstream.spec.name in self.set.balancer and upstream.health.available(now)
        ]

    def _add(self, host: str, now: float) -> None:
        address = self.membership.members[host].address
        upstream = self.by_host.get(host)
        if upstream is None:
            upstream = Upstream(
                UpstreamSpec(name=address, host=host, port=self.target.port),
                self.set.new_health(address, admitted=False),
            )
            self.by_host[host] = upstream
            self.set.by_name[address] = upstream
            verb = "appeared"
        else:  # back while draining: checked again before it takes traffic
            upstream.health = self.set.new_health(upstream.spec.name, admitted=False)
            verb = "is back"
        self._event(upstream.spec.name, "ADDED", f"{address} {verb} in {self.target.label}")
        log.info(
            "upstream %s %s in %s: checking %s before it takes traffic",
            address,
            verb,
            self.target.label,
            self.settings.health_path,
        )
        self.start_checks(host)

    def _drain(self, host: str, now: float) -> None:
        upstream = self.by_host[host]
        self.stop_checks(host)
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
            upstream = self.by_host[host]
            if not member.gone or upstream.stats.active > 0:
                continue
            self._close_idle(upstream)
            name = upstream.spec.name
            if self.set.by_name.get(name) is upstream:
                del self.set.by_name[name]
            self.membership.forget(host)
            del self.by_host[host]
            self._event(name, "REMOVED", f"{upstream.spec.address} drained")
            log.info("upstream %s (%s) drained and removed", name, upstream.spec.address)

    @staticmethod
    def _close_idle(upstream: Upstream) -> None:
        for conn in list(upstream.idle):
            conn.close()
        upstream.idle.clear()

    def checked(
        self,
        host: str,
        passed: bool,
        reason: str,
        route: str | None,
        *,
        started: float | None = None,
        report: Mapping[str, Any] | None = None,
    ) -> None:
        """Record one health check of `host` (begun at `started`): admission, route, up/down,
        and the app server's `report` for the cluster view."""
        upstream = self.by_host.get(host)
        member = self.membership.members.get(host)
        if upstream is None or member is None or member.gone:
            return
        now = self.set.clock()
        admitted = upstream.health.admitted
        upstream.health.record_check(now, passed, reason, started=started)
        if passed:
            self.membership.learned(host, route)
        else:
            upstream.stats.check_failures += 1
        if not admitted and upstream.health.admitted:
            log.info(
                "upstream %s passed its health check (route %s): takes traffic",
                member.address,
                route or "none reported",
            )
        self._reconcile(now)
        if report is not None:
            self.set.cluster.reported(upstream.spec.name, report, now)

    # -- applying names and rotation --------------------------------------------
    def _reconcile(self, now: float) -> None:
        """Bring names, holds and balancer membership in line with the membership."""
        by_name, balancer = self.set.by_name, self.set.balancer
        names = self.membership.names()
        rivals = self.membership.rivals()
        renamed: list[tuple[Upstream, str, str]] = []
        # Two passes, so that a route can move from one address to another at once.
        for host, upstream in self.by_host.items():
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
        for host, upstream in self.by_host.items():
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
