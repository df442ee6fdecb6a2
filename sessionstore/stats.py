"""Session manager statistics: plain counters and latency percentiles, one snapshot dict.

Besides the flat counters (what `snapshot()` gives, one number per name), three mappings for
the cluster view, kept out of the snapshot because its consumers expect one number per key:
`taken_over_from` (former route -> sticky sessions taken over from it), `relocations` (from
node -> to node -> sessions moved) and `backups_failed_by_node` (node -> backup writes or
expiry refreshes that failed there).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque

COUNTERS = (
    "sessions_created", "sessions_loaded", "sessions_relocated", "sessions_expired",
    "sessions_invalidated", "backups_written", "backups_skipped_unchanged", "backups_failed",
    "backups_refreshed", "backups_timed_out", "backups_too_large", "node_failures",
    "lock_waits", "lock_timeouts", "requests_ignored", "load_failures",
    # dns: node lists only (stay 0 for a static list): addresses that joined after their
    # version check, nodes drained because their address left, failed resolutions.
    "nodes_discovered", "nodes_drained", "resolver_failures",
    # Bounds on sessions: pushed out of memory at max_active_sessions (they stay in memcached),
    # refused because nothing could be pushed out, refused by session_create_rate.
    "sessions_pushed_out", "sessions_refused", "sessions_rate_limited",
    # Data-less sessions not written; changes acknowledged by a write shared with others;
    # answers turned into 503 because their change was not confirmed in memcached.
    "backups_skipped_empty", "backups_coalesced", "backups_unconfirmed",
    # Evictions: items memcached evicted on our nodes (growth of their `evictions`, seen
    # by the stats polls) and session copies memcached had lost, written again.
    "memcached_evictions", "sessions_rewritten",
    # Sticky loads of a session whose route was another app server's (take-overs).
    "sessions_taken_over",
)
# Levels, not running totals: nodes whose evictions grew lately.
GAUGES = ("nodes_evicting",)
_WINDOW = 2048  # latest samples kept per latency series


class Stats:
    """Counters are plain attributes (``stats.backups_written += 1`` is the whole cost)."""

    sessions_created: int
    sessions_loaded: int
    sessions_relocated: int
    sessions_expired: int
    sessions_invalidated: int
    backups_written: int
    backups_skipped_unchanged: int
    backups_failed: int
    backups_refreshed: int
    backups_timed_out: int
    backups_too_large: int
    node_failures: int
    lock_waits: int
    lock_timeouts: int
    requests_ignored: int
    load_failures: int
    nodes_discovered: int
    nodes_drained: int
    resolver_failures: int
    sessions_pushed_out: int
    sessions_refused: int
    sessions_rate_limited: int
    backups_skipped_empty: int
    backups_coalesced: int
    backups_unconfirmed: int
    memcached_evictions: int
    sessions_rewritten: int
    sessions_taken_over: int
    nodes_evicting: int

    def __init__(self) -> None:
        for name in COUNTERS + GAUGES:
            setattr(self, name, 0)
        self.backup_latencies = LatencyWindow(_WINDOW)
        self.load_latencies = LatencyWindow(_WINDOW)
        # The cluster view's mappings (module docstring), not part of snapshot().
        self.taken_over_from: dict[str, int] = {}
        self.relocations: dict[str, dict[str, int]] = {}
        self.backups_failed_by_node: dict[str, int] = {}

    def taken_over(self, route: str) -> None:
        """A sticky session of `route` (another app server) was loaded here: a take-over."""
        self.sessions_taken_over += 1
        self.taken_over_from[route] = self.taken_over_from.get(route, 0) + 1

    def relocated(self, from_node: str, to_node: str) -> None:
        """A session's backup moved from one node to another (a new id suffix)."""
        self.sessions_relocated += 1
        targets = self.relocations.setdefault(from_node, {})
        targets[to_node] = targets.get(to_node, 0) + 1

    def backup_failed_on(self, node: str) -> None:
        """A backup write (or expiry refresh) to `node` failed."""
        self.backups_failed_by_node[node] = self.backups_failed_by_node.get(node, 0) + 1

    def snapshot(self) -> dict[str, int | float]:
        values: dict[str, int | float] = {name: getattr(self, name)
                                          for name in COUNTERS + GAUGES}
        for series, samples in (("backup", self.backup_latencies), ("load", self.load_latencies)):
            ordered = sorted(samples)
            values[f"{series}_latency_p50"] = percentile(ordered, 0.50)
            values[f"{series}_latency_p99"] = percentile(ordered, 0.99)
        return values


def percentile(ordered: list[float], fraction: float) -> float:
    """Nearest-rank percentile of sorted samples; 0.0 when there are none."""
    if not ordered:
        return 0.0
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]


# -- latency histograms (issue 15) ------------------------------------------------------
# Upper bounds in seconds: memcached on a LAN answers in well under a millisecond, a
# struggling node within operation_timeout.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5)


class LatencyWindow(deque[float]):
    """The latest samples (for the percentiles), and since start how many fell at or under
    each of LATENCY_BUCKETS and their sum: a Prometheus histogram counts every sample, which
    a rolling window cannot tell afterwards."""

    def __init__(self, maxlen: int) -> None:
        super().__init__((), maxlen)
        self.bucket_counts = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one: above them all
        self.total = 0.0

    def append(self, seconds: float) -> None:
        super().append(seconds)
        self.bucket_counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds
