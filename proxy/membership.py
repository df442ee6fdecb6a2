"""Discovered upstreams ("dns:NAME:PORT"), the pure part: addresses, names, routes.

- An address that appears in DNS joins as "checking"; one that disappears is
  "gone" (drained by the caller, then forgotten).
- An upstream is named by its address (``10.0.0.5:8000``, ``[fd00::5]:8000``)
  until its health check reports a route (appserver's ``{"route": "app1"}``);
  then it is named by the route, which is what sticky session ids carry.
- Two addresses reporting the same route: the newest to appear in DNS keeps
  it (a restarted app server replaces the old one); the other is superseded,
  named by its address and given no traffic until its route changes or the
  newer one leaves. A member still in DNS always wins over a gone one.

No I/O here: the asyncio side (discovery.py) feeds resolutions and check
results in and applies the names and rivals it reads back.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from netnames import address_text

_ROUTE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_ROUTE_HEADER = b"x-route"


@dataclass(frozen=True, slots=True)
class AddressChange:
    """What one resolution changes: addresses to check and add, addresses to drain."""

    added: tuple[str, ...]
    removed: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)


def diff_addresses(current: Iterable[str], resolved: Iterable[str]) -> AddressChange:
    """Resolved minus current (in resolved order), current minus resolved (in current order)."""
    now = list(resolved)
    before = list(current)
    now_set, before_set = set(now), set(before)
    return AddressChange(
        added=tuple(host for host in now if host not in before_set),
        removed=tuple(host for host in before if host not in now_set),
    )


# -- the health check's answer -------------------------------------------------


@dataclass(frozen=True, slots=True)
class HealthAnswer:
    status: int | None  # None when the bytes are not an HTTP response
    route: str | None
    # The JSON object of the body (appserver's /health), None for any other body.
    report: dict[str, Any] | None = None


def _split(raw: bytes) -> tuple[int | None, dict[bytes, bytes], bytes]:
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        return None, {}, b""
    lines = head.split(b"\r\n")
    parts = lines[0].split()
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return None, {}, b""
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers, body


def _dechunk(body: bytes) -> bytes | None:
    """The payload of a complete chunked body, or None while it is incomplete or bad."""
    out: list[bytes] = []
    while True:
        line, sep, rest = body.partition(b"\r\n")
        if not sep:
            return None
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            return None
        if size == 0:
            return b"".join(out)
        if len(rest) < size + 2:
            return None
        out.append(rest[:size])
        body = rest[size + 2 :]


def _body(headers: Mapping[bytes, bytes], body: bytes) -> bytes | None:
    """The whole payload, or None when more bytes are due."""
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        return _dechunk(body)
    length = headers.get(b"content-length")
    if length is not None and length.isdigit():
        return body[: int(length)] if len(body) >= int(length) else None
    return body  # delimited by the connection's close


def health_answer_complete(raw: bytes) -> bool:
    """True when `raw` holds a whole sized or chunked response (no need to wait for close)."""
    status, headers, body = _split(raw)
    if status is None:
        return False
    if b"content-length" not in headers and b"transfer-encoding" not in headers:
        return False
    return _body(headers, body) is not None


def report_from_health_body(body: bytes) -> dict[str, Any] | None:
    """The JSON object of a health answer's body, or None."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return document if isinstance(document, dict) else None


def route_from_health_body(body: bytes) -> str | None:
    """The `"route"` of a JSON health answer, when it is a usable upstream name."""
    return _route_of(report_from_health_body(body))


def _route_of(report: Mapping[str, Any] | None) -> str | None:
    route = report.get("route") if report is not None else None
    return route if isinstance(route, str) and _ROUTE.match(route) else None


def parse_health_answer(raw: bytes) -> HealthAnswer:
    """Status and route of a health check's answer (read until close or complete)."""
    status, headers, body = _split(raw)
    if status is None:
        return HealthAnswer(None, None)
    payload = _body(headers, body)
    report = report_from_health_body(payload) if payload else None
    route = _route_of(report)
    if route is None:
        header = headers.get(_ROUTE_HEADER, b"").decode("latin-1")
        route = header if _ROUTE.match(header) else None
    return HealthAnswer(status, route, report)


# -- membership ----------------------------------------------------------------


@dataclass(slots=True)
class Member:
    """One address of the DNS name."""

    host: str
    address: str  # its name until it owns a route
    seq: int  # order of (re)appearance in DNS: higher is newer
    route: str | None = None  # what its last passing health check reported
    gone: bool = False  # left DNS: being drained


class Membership:
    """Every address of one DNS name, and who owns which route."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.members: dict[str, Member] = {}
        self._seq = 0

    @property
    def live(self) -> list[str]:
        """Addresses currently in DNS."""
        return [host for host, member in self.members.items() if not member.gone]

    def resolved(self, hosts: Iterable[str]) -> AddressChange:
        """Apply one successful resolution (usable addresses, not empty)."""
        change = diff_addresses(self.live, hosts)
        for host in change.added:
            self._seq += 1
            member = self.members.get(host)
            if member is None:
                self.members[host] = Member(host, address_text(host, self.port), self._seq)
            else:  # back before its drain finished: a newcomer again, checked again
                member.gone = False
                member.seq = self._seq
                member.route = None
        for host in change.removed:
            self.members[host].gone = True
        return change

    def learned(self, host: str, route: str | None) -> None:
        """A passing health check of `host` reported `route`."""
        member = self.members.get(host)
        if member is not None:
            member.route = route

    def forget(self, host: str) -> None:
        """The drain of `host` is over."""
        self.members.pop(host, None)

    def owners(self) -> dict[str, Member]:
        """route -> the member that carries it: live before gone, then the newest."""
        owners: dict[str, Member] = {}
        for member in self.members.values():
            if member.route is None:
                continue
            best = owners.get(member.route)
            if best is None or (not member.gone, member.seq) > (not best.gone, best.seq):
                owners[member.route] = member
        return owners

    def names(self) -> dict[str, str]:
        """host -> the upstream's name: its route when it owns it, else its address."""
        owners = self.owners()
        return {
            host: member.route
            if member.route is not None and owners[member.route] is member
            else member.address
            for host, member in self.members.items()
        }

    def rivals(self) -> dict[str, Member]:
        """host -> the member that took its route from it (superseded members only)."""
        owners = self.owners()
        return {
            host: owners[member.route]
            for host, member in self.members.items()
            if member.route is not None and owners[member.route] is not member
        }
