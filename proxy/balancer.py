"""Upstream choice: nginx's smooth weighted round robin and sticky routes.

Pure: no I/O. The route is the `.ROUTE` suffix of the session id, read from the
session cookie or a `;jsessionid=` path parameter (mod_jk's jvmRoute).

Each peer's availability is one flag its health state machine keeps current
(health.py), read per request without a call or a clock. When no peer is usable,
the one out for passive failures only whose out-time ends soonest is tried
rather than none (see health.py for why).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Protocol

from proxy.settings import Policy


class Availability(Protocol):
    """What the balancer reads of an upstream's health (health.UpstreamHealth)."""

    usable: bool

    @property
    def fallback_until(self) -> float: ...


class Peer:
    """A weighted member of the round robin."""

    __slots__ = ("current", "health", "name", "weight")

    def __init__(self, name: str, weight: int, health: Availability) -> None:
        self.name = name
        self.weight = weight
        self.health = health
        self.current = 0


class Balancer:
    def __init__(
        self,
        peers: Sequence[tuple[str, int]],
        *,
        policy: Policy,
        health_of: Callable[[str], Availability],
    ) -> None:
        self._health_of = health_of
        self._peers = [Peer(name, weight, health_of(name)) for name, weight in peers]
        self._by_name = {peer.name: peer for peer in self._peers}
        self._sticky = policy == "sticky"
        self._only = self._peers[0] if len(self._peers) == 1 else None

    # -- membership (discovered upstreams come and go; never on the request path) --
    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def add(self, name: str, weight: int = 1) -> None:
        """Let `name` take traffic; it starts with no round-robin credit."""
        peer = self._by_name.get(name)
        if peer is None:
            peer = Peer(name, weight, self._health_of(name))
            self._peers.append(peer)
            self._by_name[name] = peer
            self._only = self._peers[0] if len(self._peers) == 1 else None
        else:
            peer.health = self._health_of(name)  # discovery may have replaced it

    def remove(self, name: str) -> None:
        """No new requests for `name` (requests in flight are not the balancer's business)."""
        peer = self._by_name.pop(name, None)
        if peer is not None:
            self._peers.remove(peer)
            self._only = self._peers[0] if len(self._peers) == 1 else None

    def __len__(self) -> int:
        return len(self._peers)

    def choose(self, route: str | None = None, exclude: Collection[str] = ()) -> str | None:
        """Name of the upstream for a request, or None when none is left.

        A sticky route wins while its upstream is usable and not excluded;
        otherwise smooth weighted round robin over the usable rest; when none is
        usable, the fallback.
        """
        only = self._only
        if only is not None and not exclude and only.health.usable:
            return only.name  # what either rule gives for one peer (its credit stays 0)
        if route is not None and self._sticky:
            peer = self._by_name.get(route)
            if peer is not None and peer.health.usable and peer.name not in exclude:
                return peer.name
        best: Peer | None = None
        total = 0
        for peer in self._peers:
            if not peer.health.usable or (exclude and peer.name in exclude):
                continue
            peer.current += peer.weight
            total += peer.weight
            if best is None or peer.current > best.current:
                best = peer
        if best is None:
            return self._fallback(exclude)
        best.current -= total
        return best.name

    def _fallback(self, exclude: Collection[str]) -> str | None:
        """Nothing usable: the peer out for passive failures only that is back soonest."""
        best: Peer | None = None
        best_until = 0.0
        for peer in self._peers:
            until = peer.health.fallback_until
            if until and peer.name not in exclude and (best is None or until < best_until):
                best, best_until = peer, until
        return None if best is None else best.name


def route_of_session_id(session_id: str) -> str | None:
    """`3F25...-n2.app1` -> `app1`; None when the id carries no route."""
    _, dot, route = session_id.rpartition(".")
    if not dot or not route:
        return None
    return route


def session_id_from_cookie(cookie_header: str, cookie_name: str) -> str | None:
    for part in cookie_header.split(";"):
        name, eq, value = part.strip().partition("=")
        if eq and name == cookie_name:
            return value.strip().strip('"') or None
    return None


def session_id_from_path(target: str, cookie_name: str) -> str | None:
    """The `;jsessionid=ID` path parameter (lower-case name, as Tomcat)."""
    marker = ";" + cookie_name.lower() + "="
    path = target.split("?", 1)[0]
    index = path.lower().find(marker)
    if index < 0:
        return None
    value = path[index + len(marker) :]
    for stop in (";", "/"):
        value = value.split(stop, 1)[0]
    return value or None


def route_of_request(target: str, cookie_headers: Sequence[str], cookie_name: str) -> str | None:
    """Route named by the request's session id: cookie first, then path parameter."""
    for header in cookie_headers:
        session_id = session_id_from_cookie(header, cookie_name)
        if session_id:
            return route_of_session_id(session_id)
    session_id = session_id_from_path(target, cookie_name)
    return route_of_session_id(session_id) if session_id else None
