"""Session manager statistics: plain counters and latency percentiles, one snapshot dict."""

from __future__ import annotations

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
    nodes_evicting: int

    def __init__(self) -> None:
        for name in COUNTERS + GAUGES:
            setattr(self, name, 0)
        self.backup_latencies: deque[float] = deque(maxlen=_WINDOW)
        self.load_latencies: deque[float] = deque(maxlen=_WINDOW)

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
