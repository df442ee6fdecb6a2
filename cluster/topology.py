"""The cluster topology (pure): parse and validate the TOML file into members.

The file has one table per role (`[memcached]`, `[appserver]`, `[proxy]`). A role
table's scalar keys are defaults for its members; each `[role.NAME]` sub-table is
one member and overrides them. `listen` and `host` are read here (a proxy's `listen`
may list several addresses, each optionally followed by ` ssl`, as the proxy reads it);
memcached's `memory` and `item_size_limit` too, since the launcher is memcached's only
configuration. Every other key belongs to the app server or proxy, which read the
same file themselves.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from netnames import address_text

from .errors import TopologyError

Role = Literal["memcached", "appserver", "proxy"]
ROLES: tuple[Role, ...] = ("memcached", "appserver", "proxy")

DEFAULT_MEMORY_MB = 64
DEFAULT_ITEM_SIZE_LIMIT = "1m"
# The keys the launcher reads itself: (key, default as TOML writes it or "(words)", meaning).
# `sessionha up --help` and docs/reference.md are printed from this table: they cannot drift.
MEMBER_KEYS: tuple[tuple[str, str, str], ...] = (
    (
        "listen",
        "(required)",
        "host:port the member listens on (every role); a proxy may list several, each optionally "
        'followed by " ssl" ("127.0.0.1:8080,127.0.0.1:8443 ssl")',
    ),
    ("host", "(none)", 'the machine the member stands for, e.g. "host1" (every role)'),
    ("memory", str(DEFAULT_MEMORY_MB), "memcached: MB of memory for items (memcached -m)"),
    (
        "item_size_limit",
        f'"{DEFAULT_ITEM_SIZE_LIMIT}"',
        'memcached: the largest item, like "1m" or "512k" (memcached -I)',
    ),
)
MEMCACHED_KEYS = frozenset(key for key, _, _ in MEMBER_KEYS)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
_SIZE = re.compile(r"^[1-9][0-9]*[kKmM]?$")


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return address_text(self.host, self.port)

    @property
    def connect_host(self) -> str:
        """Where a local client connects: a wildcard listen address means loopback."""
        return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)


@dataclass(frozen=True)
class Member:
    name: str
    role: Role
    listen: Address
    host: str | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    # Every address of a proxy's `listen` list and whether it is ssl; `listen` is its first
    # plain one (the first ssl one if it has none), which the launcher probes.
    listeners: tuple[tuple[Address, bool], ...] = ()

    @property
    def addresses(self) -> tuple[Address, ...]:
        return tuple(address for address, _ in self.listeners) or (self.listen,)

    @property
    def https(self) -> Address | None:
        """The first ssl listener of a proxy, where its https URL points."""
        return next((address for address, secure in self.listeners if secure), None)

    @property
    def listen_is_ssl(self) -> bool:
        return (self.listen, True) in self.listeners

    @property
    def memory_mb(self) -> int:
        return int(self.settings.get("memory", DEFAULT_MEMORY_MB))

    @property
    def item_size_limit(self) -> str:
        return str(self.settings.get("item_size_limit", DEFAULT_ITEM_SIZE_LIMIT))


@dataclass(frozen=True)
class Topology:
    members: tuple[Member, ...]

    def member(self, name: str) -> Member:
        for member in self.members:
            if member.name == name:
                return member
        raise TopologyError(f"unknown member {name!r} (members: {', '.join(self.names)})")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(member.name for member in self.members)

    def of_role(self, role: Role) -> tuple[Member, ...]:
        return tuple(member for member in self.members if member.role == role)


def parse_address(text: object, *, where: str) -> Address:
    """`host:port` or `[v6]:port`; the error names the member and the bad value."""
    if not isinstance(text, str):
        raise TopologyError(f"{where}: listen must be a string like '127.0.0.1:8080', got {text!r}")
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise TopologyError(f"{where}: listen must be host:port with a port 1-65535, got {text!r}")
    return Address(host, int(port_text))


def _member(role: Role, name: str, table: Mapping[str, Any], defaults: Mapping[str, Any]) -> Member:
    where = f"[{role}.{name}]"
    if not _NAME.match(name):
        raise TopologyError(f"{where}: member names are letters, digits, '-' and '_'")
    merged = {**defaults, **table}
    for key, value in merged.items():
        if isinstance(value, dict):
            raise TopologyError(f"{where}: unexpected sub-table {key!r}")
    if "listen" not in merged:
        raise TopologyError(f"{where}: missing key 'listen' (host:port)")
    host = merged.get("host")
    if host is not None and not isinstance(host, str):
        raise TopologyError(f"{where}: host must be a string, got {host!r}")
    if role == "memcached":
        unknown = sorted(set(merged) - MEMCACHED_KEYS)
        if unknown:
            raise TopologyError(
                f"{where}: unknown key {unknown[0]!r} (memcached members take "
                f"{', '.join(sorted(MEMCACHED_KEYS))})"
            )
        memory = merged.get("memory", DEFAULT_MEMORY_MB)
        if isinstance(memory, bool) or not isinstance(memory, int) or memory <= 0:
            raise TopologyError(f"{where}: memory must be a positive number of MB, got {memory!r}")
        limit = merged.get("item_size_limit", DEFAULT_ITEM_SIZE_LIMIT)
        if isinstance(limit, bool) or not _SIZE.match(str(limit)):
            raise TopologyError(
                f'{where}: item_size_limit must look like "1m" or "512k", got {limit!r}'
            )
    if role == "proxy":
        listeners = parse_listeners(merged["listen"], where=where)
        plain = [address for address, secure in listeners if not secure]
        first = plain[0] if plain else listeners[0][0]
        return Member(name, role, first, host, merged, listeners)
    return Member(name, role, parse_address(merged["listen"], where=where), host, merged)


def parse_listeners(text: object, *, where: str) -> tuple[tuple[Address, bool], ...]:
    """A proxy's `listen`: `host:port[ ssl],...`."""
    if not isinstance(text, str):
        raise TopologyError(f"{where}: listen must be a string like '127.0.0.1:8080', got {text!r}")
    listeners = []
    for entry in text.split(","):
        address, *options = entry.split() or [""]
        if options not in ([], ["ssl"]):
            raise TopologyError(
                f"{where}: listen entries are host:port, optionally followed by ssl; "
                f"got {entry.strip()!r}"
            )
        listeners.append((parse_address(address, where=where), bool(options)))
    return tuple(listeners)


def parse_topology(data: Mapping[str, Any]) -> Topology:
    """Members of every role, in start order (memcached, app servers, proxy)."""
    unknown = sorted(set(data) - set(ROLES))
    if unknown:
        raise TopologyError(f"unknown table [{unknown[0]}] (expected {', '.join(ROLES)})")
    members: list[Member] = []
    for role in ROLES:
        table = data.get(role, {})
        if not isinstance(table, dict):
            raise TopologyError(f"[{role}] must be a table")
        defaults = {k: v for k, v in table.items() if not isinstance(v, dict)}
        for name, sub in table.items():
            if isinstance(sub, dict):
                members.append(_member(role, name, sub, defaults))
    if not members:
        raise TopologyError(
            "no members: add at least one [memcached.NAME], [appserver.NAME] or [proxy.NAME] table"
        )
    seen_names: dict[str, Member] = {}
    seen_ports: dict[int, Member] = {}
    for member in members:
        if member.name in seen_names:
            first = seen_names[member.name]
            raise TopologyError(
                f"member name {member.name!r} is used twice "
                f"([{first.role}.{first.name}] and [{member.role}.{member.name}])"
            )
        seen_names[member.name] = member
        # Same port on two loopback/wildcard addresses still collides, so ports are unique.
        for address in member.addresses:
            other = seen_ports.get(address.port)
            if other is not None:
                raise TopologyError(
                    f"{other.name} and {member.name} both listen on port {address.port}"
                    if other is not member
                    else f"{member.name} lists port {address.port} twice"
                )
            seen_ports[address.port] = member
    return Topology(tuple(members))


def load_topology(path: Path) -> Topology:
    """Read and validate the TOML file; every problem is one TopologyError line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TopologyError(f"{path}: no such topology file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise TopologyError(f"{path}: cannot read: {error}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise TopologyError(f"{path}: invalid TOML: {error}") from None
    try:
        return parse_topology(data)
    except TopologyError as error:
        raise TopologyError(f"{path}: {error}") from None
