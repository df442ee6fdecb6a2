"""The cluster as the status page shows it: every app server, every memcached node as
the app servers see it, and a timeline of what happened. Pure.

The proxy polls each app server's `/health` (checker.py); every answer is a
report: its route, sessions in memory, and counters that only grow
(`sessions_taken_over` and `taken_over_from` by former route,
`sessions_relocated` and `relocations` from node to node, `backups_failed`)
plus its view of each memcached node (`alive`, `failover`,
`evictions`, `evicting`, `backups_failed`). Comparing a report with the one
before tells what happened in between: "n2 marked dead by app2", "app2 took
over 37 sessions from app1", "session relocated from n2 to n1".
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from netnames import address_text
from proxy.health import HealthEvent

Kind = Literal["upstream_down", "upstream_up", "node_dead", "node_alive", "takeover", "relocation"]
Report = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ClusterEvent:
    at: float
    kind: Kind
    text: str


def _counts(report: Report, key: str) -> dict[str, int]:
    value = report.get(key)
    if not isinstance(value, Mapping):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, int) and v >= 0}


def _pairs(report: Report) -> dict[tuple[str, str], int]:
    found: dict[tuple[str, str], int] = {}
    relocations = report.get("relocations")
    if isinstance(relocations, Mapping):
        for source, targets in relocations.items():
            for target, count in _counts({"t": targets}, "t").items():
                found[str(source), target] = count
    return found


def _nodes(report: Report) -> list[Mapping[str, Any]]:
    nodes = report.get("nodes")
    return (
        [n for n in nodes if isinstance(n, Mapping) and "id" in n]
        if isinstance(nodes, list)
        else []
    )


def report_changes(
    name: str, before: Report | None, after: Report, at: float
) -> list[ClusterEvent]:
    """What happened at app server `name` between two of its reports."""
    if before is None:
        return []
    events: list[ClusterEvent] = []
    was_alive = {str(n["id"]): bool(n.get("alive")) for n in _nodes(before)}
    for node in _nodes(after):
        node_id, alive = str(node["id"]), bool(node.get("alive"))
        if node_id in was_alive and was_alive[node_id] != alive:
            if alive:
                events.append(ClusterEvent(at, "node_alive", f"{node_id} alive again for {name}"))
            else:
                events.append(ClusterEvent(at, "node_dead", f"{node_id} marked dead by {name}"))
    taken_before = _counts(before, "taken_over_from")
    for route, count in sorted(_counts(after, "taken_over_from").items()):
        grown = count - taken_before.get(route, 0)
        if grown > 0:
            sessions = "session" if grown == 1 else "sessions"
            events.append(
                ClusterEvent(at, "takeover", f"{name} took over {grown} {sessions} from {route}")
            )
    moved_before = _pairs(before)
    for (source, target), count in sorted(_pairs(after).items()):
        grown = count - moved_before.get((source, target), 0)
        if grown > 0:
            what = "session relocated" if grown == 1 else f"{grown} sessions relocated"
            events.append(
                ClusterEvent(at, "relocation", f"{what} from {source} to {target} by {name}")
            )
    return events


def health_change(event: HealthEvent) -> ClusterEvent | None:
    """An upstream going down or coming back, as the timeline says it."""
    if event.change == "DOWN":
        why = f" ({event.reason})" if event.reason else ""
        return ClusterEvent(event.at, "upstream_down", f"{event.upstream} down{why}")
    if event.change == "UP":
        return ClusterEvent(event.at, "upstream_up", f"{event.upstream} back up")
    return None


class ClusterView:
    """The latest report of every app server and the timeline of report changes."""

    def __init__(self, limit: int = 200) -> None:
        self.reports: dict[str, Report] = {}
        self.reported_at: dict[str, float] = {}
        self._events: deque[ClusterEvent] = deque(maxlen=limit)

    def reported(self, name: str, report: Report, at: float) -> None:
        self._events.extend(report_changes(name, self.reports.get(name), report, at))
        self.reports[name] = report
        self.reported_at[name] = at

    def timeline(self, health: Iterable[HealthEvent]) -> list[ClusterEvent]:
        """Report changes and upstream state changes, oldest first."""
        changes = [e for e in map(health_change, health) if e is not None]
        return sorted([*self._events, *changes], key=lambda event: event.at)

    def memcached(self, up: Collection[str] | None = None) -> list[dict[str, Any]]:
        """Every node the app servers report, with each one's view of it; with `up`, only
        the reports of those app servers count (a dead one's last word is stale)."""
        nodes: dict[str, dict[str, Any]] = {}
        for name, report in sorted(self.reports.items()):
            if up is not None and name not in up:
                continue
            listed = _nodes(report)
            # Where this app server backs up to: its alive nodes other than failover
            # nodes, or its alive failover nodes once those are all dead (MSM's rule).
            targets = [n for n in listed if n.get("alive") and not n.get("failover")] or [
                n for n in listed if n.get("alive")
            ]
            for node in listed:
                node_id = str(node["id"])
                row = nodes.setdefault(
                    node_id,
                    {
                        "id": node_id,
                        "address": _address(node),
                        "seen_by": {},
                        "backed_up_by": [],
                        "backups_failed": 0,
                        "evictions": None,
                        "evicting": False,
                    },
                )
                row["seen_by"][name] = bool(node.get("alive"))
                if node in targets:
                    row["backed_up_by"].append(name)
                failed = node.get("backups_failed")
                if isinstance(failed, int):
                    row["backups_failed"] += failed
                evictions = node.get("evictions")
                if isinstance(evictions, int):
                    row["evictions"] = max(row["evictions"] or 0, evictions)
                row["evicting"] = row["evicting"] or bool(node.get("evicting"))
        for row in nodes.values():
            row["alive"] = any(row["seen_by"].values())
        return [nodes[node_id] for node_id in sorted(nodes)]


def _address(node: Mapping[str, Any]) -> str:
    host, port = node.get("host"), node.get("port")
    return address_text(host, port) if isinstance(host, str) and isinstance(port, int) else ""
