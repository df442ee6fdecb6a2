"""Upstream health as a pure state machine: passive (nginx) and active (HAProxy) checks.

Passive: `max_fails` failed requests within `fail_timeout` seconds take an
upstream out for `fail_timeout` seconds; then it gets traffic again. Active:
`fall` consecutive failed health checks take it out, `rise` consecutive
successes bring it back. An upstream is available when neither says it is out.
Time is always passed in (seconds, wall clock), so tests need no sleeping.

HAProxy's rule on top of nginx's: an upstream out for passive failures also
comes back as soon as the active checker has seen `rise` consecutive successes
of checks started after those failures, so a restarted app server takes
traffic again without waiting out `fail_timeout` (which still ends the
passive out-time when active checks are off, or slower than it).

`usable` is the one flag the balancer reads per request. It is kept current on
every transition; the end of a passive out-time has no event of its own, so the
server's ticker calls `tick` while `out_until` is set (status queries through
`available` notice it too). `fallback_until` names the upstreams that are out
for passive failures only — no failed active check, no hold: when nothing is
usable the balancer tries the one whose out-time ends soonest rather than
answering 502 at once (nginx ignores failures when every peer of a one-peer
upstream has failed; passive failures are guesses from a few requests, while
an upstream the active checker knows dead is never tried this way).

A discovered upstream (dns: upstreams) starts "checking": out until one health
check passes. Discovery may then hold it out ("draining" when its address left
DNS, "conflict" when a newer address claims its route) and rename it (from its
address to the route its health check reports).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

Change = Literal["UP", "DOWN", "ADDED", "ROUTE", "CONFLICT", "DRAINING", "REMOVED", "DNS"]
State = Literal["up", "down", "checking", "draining", "conflict"]
Hold = Literal["draining", "conflict"]


@dataclass(frozen=True, slots=True)
class HealthEvent:
    at: float
    upstream: str
    change: Change
    reason: str

    def describe(self, clock_text: str) -> str:
        text = f"{self.upstream} {self.change} {clock_text}"
        return f"{text} {self.reason}" if self.reason else text


class EventLog:
    """The last state changes of every upstream, oldest first."""

    def __init__(self, limit: int = 200) -> None:
        self._events: deque[HealthEvent] = deque(maxlen=limit)

    def add(self, event: HealthEvent) -> None:
        self._events.append(event)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(tuple(self._events))

    def __len__(self) -> int:
        return len(self._events)


class UpstreamHealth:
    """State of one upstream. Every method takes the current time `now`."""

    def __init__(
        self,
        name: str,
        *,
        log: EventLog,
        max_fails: int,
        fail_timeout: float,
        fall: int,
        rise: int,
        admitted: bool = True,
    ) -> None:
        self.name = name
        self._log = log
        self._max_fails = max_fails
        self._fail_timeout = fail_timeout
        self._fall = fall
        self._rise = rise
        self._failure_times: deque[float] = deque()
        self._passive_until = 0.0
        # When the passive out-time began: only checks started later may end it.
        self._passive_since = 0.0
        self._active_down = False
        self._check_fails = 0
        self._check_passes = 0
        self.reason = "" if admitted else "checking: no health check passed yet"
        self._up = admitted
        self._admitted = admitted
        self._hold: Hold | None = None
        # Out for a reason other than passive failures: actively down, not admitted, held.
        self._out = not admitted
        # Takes new requests now (the balancer's per-request test).
        self.usable = admitted

    # -- queries -------------------------------------------------------------
    def available(self, now: float) -> bool:
        """`usable`, after noticing a passive out-time that has ended by `now`."""
        if self._passive_until and now >= self._passive_until:
            self._end_passive(now, "fail_timeout expired")
        return self.usable

    @property
    def out_until(self) -> float:
        """End of the passive out-time (0.0 when there is none)."""
        return self._passive_until

    @property
    def fallback_until(self) -> float:
        """End of the out-time when passive failures are the only reason, else 0.0."""
        return 0.0 if self._out else self._passive_until

    @property
    def failing(self) -> bool:
        """Recent passive failures are on record (so a success has something to clear)."""
        return bool(self._failure_times)

    @property
    def is_up(self) -> bool:
        """The state last reported (as in the event log)."""
        return self._up

    @property
    def admitted(self) -> bool:
        """A health check has passed (always true for a static upstream)."""
        return self._admitted

    def state(self, now: float) -> State:
        """What the status page shows."""
        if self._hold is not None:
            return self._hold
        if not self._admitted:
            return "checking"
        return "up" if self.available(now) else "down"

    # -- discovery -----------------------------------------------------------
    def hold(self, now: float, hold: Hold | None, reason: str = "") -> None:
        """Keep a discovered upstream out of rotation (None lets it back in)."""
        if hold == self._hold:
            return
        self._hold = hold
        self._update_out()
        if hold is not None:
            self.reason = f"{hold}: {reason}" if reason else hold
            change: Change = "DRAINING" if hold == "draining" else "CONFLICT"
            self._log.add(HealthEvent(now, self.name, change, reason))
        elif not self._out:
            self.reason = ""

    def rename(self, now: float, name: str, reason: str) -> None:
        self.name = name
        self._log.add(HealthEvent(now, name, "ROUTE", reason))

    def _update_out(self) -> None:
        self._out = self._active_down or not self._admitted or self._hold is not None
        self.usable = not (self._out or self._passive_until)

    # -- passive -------------------------------------------------------------
    def record_failure(self, now: float, reason: str) -> None:
        if self._max_fails <= 0:
            return
        window_start = now - self._fail_timeout
        times = self._failure_times
        while times and times[0] < window_start:
            times.popleft()
        times.append(now)
        if len(times) >= self._max_fails and not self._passive_until:
            self._passive_until = now + self._fail_timeout
            self._passive_since = now
            self._check_passes = 0
            self.usable = False
            self._set_down(now, reason)

    def _end_passive(self, now: float, reason: str) -> None:
        self._passive_until = 0.0
        self._failure_times.clear()
        self.usable = not self._out
        self._set_up(now, reason)

    def record_success(self, now: float) -> None:
        if self._failure_times and not self._passive_until:
            self._failure_times.clear()

    # -- active --------------------------------------------------------------
    def record_check(
        self, now: float, ok: bool, reason: str = "", *, started: float | None = None
    ) -> None:
        """One active check, finished at `now`; `started` (when known) is when it began."""
        if not self._admitted:
            # A new address: one passing check lets it in; failures keep it waiting.
            if ok:
                self._admitted = True
                self._check_passes = 1
                self._update_out()
                self._set_up(now, "health check passed (new address)")
            else:
                self.reason = f"checking: {reason}"
            return
        if ok:
            self._check_fails = 0
            if self._passive_until and started is not None and started < self._passive_since:
                return  # began before the failures: says nothing about after them
            self._check_passes += 1
            if self._active_down and self._check_passes >= self._rise:
                self._active_down = False
                self._passive_until = 0.0
                self._failure_times.clear()
                self._update_out()
                self._set_up(now, f"{self._rise} health checks passed")
            elif self._passive_until and self._check_passes >= self._rise:
                self._end_passive(now, f"{self._rise} health checks passed")
        else:
            self._check_passes = 0
            self._check_fails += 1
            if not self._active_down and self._check_fails >= self._fall:
                self._active_down = True
                self._update_out()
                self._set_down(now, f"health check: {reason}")

    # -- tick ----------------------------------------------------------------
    def tick(self, now: float) -> None:
        """Notice a passive out-time that has ended (called while `out_until` is set)."""
        if self._passive_until and now >= self._passive_until:
            self._end_passive(now, "fail_timeout expired")

    def _set_down(self, now: float, reason: str) -> None:
        self.reason = reason
        if self._up:
            self._up = False
            self._log.add(HealthEvent(now, self.name, "DOWN", reason))

    def _set_up(self, now: float, reason: str) -> None:
        if self._out or self._passive_until:
            return
        self.reason = ""
        if not self._up:
            self._up = True
            self._log.add(HealthEvent(now, self.name, "UP", reason))
