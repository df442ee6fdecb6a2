"""Per-upstream counters, latency percentiles and histogram, and a requests-per-second
history. Pure."""

from __future__ import annotations

from bisect import bisect_left
from collections import deque

# The latest this many latencies make the percentiles (a power of two: the ring index
# wraps with a mask).
_LATENCY_SAMPLES = 2048
_RING_MASK = _LATENCY_SAMPLES - 1
HISTORY_SECONDS = 300
# Upper bounds (seconds) of the latency histogram's buckets, Prometheus' defaults; the
# last bucket (+Inf) is implicit.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
_FIRST_BOUND = LATENCY_BUCKETS[0]


class UpstreamStats:
    __slots__ = (
        "_last_requests",
        "_latencies",
        "_next",
        "active",
        "buckets",
        "check_failures",
        "failures",
        "history",
        "latency_sum",
        "received",
        "requests",
        "responses",
        "retries",
        "sent",
    )

    def __init__(self) -> None:
        self.active = 0
        self.requests = 0
        self.failures = 0
        self.retries = 0
        self.check_failures = 0
        # Responses by status class: responses[2] counts the 2xx.
        self.responses = [0] * 6
        # Bytes sent to the upstream (requests) and received from it (responses).
        self.sent = 0
        self.received = 0
        # Not cumulative (Prometheus' are): buckets[i] counts latencies in
        # (LATENCY_BUCKETS[i-1], LATENCY_BUCKETS[i]], the last one those above all bounds.
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        # A ring, filled in order; percentiles are computed only when asked for.
        self._latencies = [0.0] * _LATENCY_SAMPLES
        self._next = 0
        self._last_requests = 0
        # (wall time, requests in the second before it), oldest first.
        self.history: deque[tuple[float, int]] = deque(maxlen=HISTORY_SECONDS)

    def observe(self, seconds: float) -> None:
        """One finished request and how long it took. O(log buckets), no allocation."""
        self.requests += 1
        # Most answers come within the first bound: no search for them.
        self.buckets[0 if seconds <= _FIRST_BOUND else bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds
        index = self._next
        self._latencies[index & _RING_MASK] = seconds
        self._next = index + 1

    def percentile(self, fraction: float) -> float | None:
        """Latency (seconds) below which `fraction` of the recent requests finished."""
        count = min(self._next, _LATENCY_SAMPLES)
        if not count:
            return None
        ordered = sorted(self._latencies[:count])
        index = min(count - 1, max(0, round(fraction * count) - 1))
        return ordered[index]

    def sample_second(self, now: float) -> None:
        """Called once a second: remember how many requests finished since the last call."""
        self.history.append((now, self.requests - self._last_requests))
        self._last_requests = self.requests
