"""Upstream choice: nginx's smooth weighted round robin and sticky routes.

Pure: no I/O. The route is the `.ROUTE` suffix of the session id, read from the
session cookie or a `;jsessionid=` path parameter (mod_jk's jvmRoute).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

from proxy.settings import Policy


class Peer:
    """A weighted member of the round robin."""

    __slots__ = ("current", "name", "weight")

    def __init__(self, name: str, weight: int) -> None:
        self.name = name
        self.weight = weight
        self.current = 0


class Balancer:
    def __init__(
        self,
        peers: Sequence[tuple[str, int]],
        *,
        policy: Policy,
        available: Callable[[str], bool],
    ) -> None:
        self._peers = [Peer(name, weight) for name, weight in peers]
        self._by_name = {peer.name: peer for peer in self._peers}
        self._sticky = policy == "sticky"
        self._available = available

    # -- membership (discovered upstreams come and go; never on the request path) --
    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def add(self, name: str, weight: int = 1) -> None:
        """Let `name` take traffic; it starts with no round-robin credit."""
        if name not in self._by_name:
            peer = Peer(name, weight)
            self._peers.append(peer)
            self._by_name[name] = peer

    def remove(self, name: str) -> None:
        """No new requests for `name` (requests in flight are not the balancer's business)."""
        peer = self._by_name.pop(name, None)
        if peer is not None:
            self._peers.remove(peer)

    def __len__(self) -> int:
        return len(self._peers)

    def choose(self, route: str | None = None, exclude: Collection[str] = ()) -> str | None:
        """Name of the upstream for a request, or None when none is left.

        A sticky route wins while its upstream is available and not excluded;
        otherwise smooth weighted round robin over the available rest.
        """
        if route is not None and self._sticky:
            peer = self._by_name.get(route)
            if peer is not None and peer.name not in exclude and self._available(peer.name):
                return peer.name
        return self._round_robin(exclude)

    def _round_robin(self, exclude: Collection[str]) -> str | None:
        best: Peer | None = None
        total = 0
        available = self._available
        for peer in self._peers:
            if (exclude and peer.name in exclude) or not available(peer.name):
                continue
            peer.current += peer.weight
            total += peer.weight
            if best is None or peer.current > best.current:
                best = peer
        if best is None:
            return None
        best.current -= total
        return best.name


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
