"""Per-upstream counters, latency percentiles and a requests-per-second history. Pure."""

from __future__ import annotations

from collections import deque

_LATENCY_SAMPLES = 2048
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
        self._latencies: list[float] = []
        self._next = 0
        self._last_requests = 0
        # (wall time, requests in the second before it), oldest first.
        self.history: deque[tuple[float, int]] = deque(maxlen=HISTORY_SECONDS)

    def observe(self, seconds: float) -> None:
        """One finished request and how long it took."""
        self.requests += 1
        latencies = self._latencies
        if len(latencies) < _LATENCY_SAMPLES:
            latencies.append(seconds)
        else:
            latencies[self._next] = seconds
            self._next = (self._next + 1) % _LATENCY_SAMPLES

    def percentile(self, fraction: float) -> float | None:
        """Latency (seconds) below which `fraction` of the recent requests finished."""
        if not self._latencies:
            return None
        ordered = sorted(self._latencies)
        index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
        return ordered[index]

    def sample_second(self, now: float) -> None:
        """Called once a second: remember how many requests finished since the last call."""
        self.history.append((now, self.requests - self._last_requests))
        self._last_requests = self.requests
