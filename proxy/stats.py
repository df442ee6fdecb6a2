"""Per-upstream counters, latency percentiles and a requests-per-second history. Pure."""

from __future__ import annotations

from collections import deque

# The latest this many latencies make the percentiles (a power of two: the ring index
# wraps with a mask).
_LATENCY_SAMPLES = 2048
_RING_MASK = _LATENCY_SAMPLES - 1
HISTORY_SECONDS = 300


class UpstreamStats:
    __slots__ = (
        "_last_requests",
        "_latencies",
        "_next",
        "active",
        "failures",
        "history",
        "requests",
        "retries",
    )

    def __init__(self) -> None:
        self.active = 0
        self.requests = 0
        self.failures = 0
        self.retries = 0
        # A ring, filled in order; percentiles are computed only when asked for.
        self._latencies = [0.0] * _LATENCY_SAMPLES
        self._next = 0
        self._last_requests = 0
        # (wall time, requests in the second before it), oldest first.
        self.history: deque[tuple[float, int]] = deque(maxlen=HISTORY_SECONDS)

    def observe(self, seconds: float) -> None:
        """One finished request and how long it took. O(1), no allocation."""
        self.requests += 1
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
