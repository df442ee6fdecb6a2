"""Proxy settings: one frozen dataclass built from a TOML table or the environment.

Names follow nginx (`max_fails`, `fail_timeout`, `next_upstream_tries`,
`keepalive`, `client_max_body_size`, `proxy_connect_timeout`, ...) and HAProxy
(`fall`, `rise`). Durations are seconds as floats.

`upstreams` is a comma-separated list of `name=host:port`, each optionally
followed by nginx's ` weight=N` (``"app1=127.0.0.1:8081 weight=2,app2=127.0.0.1:8082"``),
or one DNS name, ``"dns:NAME:PORT"`` (``"dns:tasks.app:8000"``): every address the
name resolves to is an upstream, re-resolved every `resolver_valid` seconds (nginx's
`resolver ... valid=`, HAProxy's `server-template` with `resolvers`); new addresses are
admitted by the active health check, which also tells each one's route (discovery.py).

Where the meaning differs from nginx: `proxy_connect_timeout` defaults to 5 s
(nginx: 60) because a dead app server should fail over fast; `keepalive` is the
number of idle connections kept per upstream server; `keepalive_timeout` bounds
both an idle client connection and an idle pooled upstream connection.
Zero switches a feature off: `max_fails = 0` (no passive checks),
`health_interval = 0` (no active checks), `client_max_body_size = 0` (no limit),
`next_upstream_tries = 0` (try every upstream once, as nginx).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from proxy.errors import SettingsError

Policy = Literal["sticky", "round_robin"]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# A DNS name: dot-separated labels of letters, digits, hyphens and underscores (SRV-style
# names and Docker service names use them), no leading or trailing hyphen.
_DNS_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")
DNS_PREFIX = "dns:"
_SIZE = re.compile(r"^(\d+)\s*([kKmMgG]?)$")
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024 * 1024, "g": 1024 * 1024 * 1024}
# Keys of a cluster member table that describe the topology, not the proxy.
_IGNORED_KEYS = frozenset({"host"})


@dataclass(frozen=True, slots=True)
class UpstreamSpec:
    """One app server behind the proxy."""

    name: str
    host: str
    port: int
    weight: int = 1

    @property
    def address(self) -> str:
        """`host:port`, an IPv6 address in brackets (as a Host header wants it)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class DnsTarget:
    """`upstreams = "dns:NAME:PORT"`: every address NAME resolves to, on PORT."""

    name: str
    port: int

    @property
    def label(self) -> str:
        return f"{DNS_PREFIX}{self.name}:{self.port}"


@dataclass(frozen=True, slots=True)
class ProxySettings:
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    upstreams: tuple[UpstreamSpec, ...] = field(default_factory=tuple)
    # Set when `upstreams` is "dns:NAME:PORT"; `upstreams` is then empty.
    discovery: DnsTarget | None = None
    resolver_valid: float = 5.0
    policy: Policy = "sticky"
    session_cookie_name: str = "JSESSIONID"
    max_fails: int = 1
    fail_timeout: float = 10.0
    next_upstream_tries: int = 0
    keepalive: int = 32
    keepalive_timeout: float = 60.0
    client_max_body_size: int = 1024 * 1024
    proxy_connect_timeout: float = 5.0
    proxy_read_timeout: float = 60.0
    client_header_timeout: float = 60.0
    client_body_timeout: float = 60.0
    send_timeout: float = 60.0
    health_path: str = "/health"
    health_interval: float = 2.0
    health_timeout: float = 1.0
    fall: int = 3
    rise: int = 2
    status_prefix: str = "/_proxy"
    # nginx's realip module: peers that may say who the client is (and its scheme).
    set_real_ip_from: tuple[IPNetwork, ...] = ()
    real_ip_header: str = "X-Forwarded-For"

    @property
    def tries_limit(self) -> int:
        """How many upstreams one request may try (0 means all, as nginx)."""
        return self.tries_for(len(self.upstreams))

    def tries_for(self, count: int) -> int:
        """`tries_limit` for `count` upstreams (discovered upstreams come and go).

        At least 1: with no upstream at all a request still asks the balancer once,
        so the client is told "no live upstreams".
        """
        if self.next_upstream_tries <= 0:
            return max(count, 1)
        return max(min(self.next_upstream_tries, count), 1)


def parse_listen(key: str, value: str, *, any_port: bool = False) -> tuple[str, int]:
    """`host:port`; with `any_port`, port 0 (the system picks one) is allowed."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise SettingsError(key, value, "expected host:port")
    lowest = 0 if any_port else 1
    if not port_text.isdigit() or not lowest <= int(port_text) < 65536:
        raise SettingsError(key, value, f"port {port_text!r} is not a number in {lowest}..65535")
    return host.strip("[]"), int(port_text)


def parse_upstreams(value: str) -> tuple[UpstreamSpec, ...]:
    key = "upstreams"
    specs: list[UpstreamSpec] = []
    for entry in value.split(","):
        entry = entry.strip()
        if not entry:
            raise SettingsError(key, value, "empty entry")
        name, eq, rest = entry.partition("=")
        name = name.strip()
        if not eq or not _NAME.match(name):
            raise SettingsError(key, value, f"entry {entry!r} is not name=host:port")
        address, *options = rest.split() or [""]
        weight = 1
        for option in options:
            opt_name, _, opt_value = option.partition("=")
            if opt_name != "weight" or not opt_value.isdigit() or int(opt_value) < 1:
                raise SettingsError(key, value, f"option {option!r} is not weight=N (N >= 1)")
            weight = int(opt_value)
        try:
            host, port = parse_listen(key, address)
        except SettingsError as error:
            raise SettingsError(key, value, f"entry {entry!r}: {error.why}") from None
        if any(spec.name == name for spec in specs):
            raise SettingsError(key, value, f"upstream name {name!r} appears twice")
        specs.append(UpstreamSpec(name=name, host=host, port=port, weight=weight))
    return tuple(specs)


def parse_dns_target(value: str) -> DnsTarget:
    """`dns:NAME:PORT`, strictly: a host name (not a list, no weight) and a port."""
    key = "upstreams"
    rest = value.strip()[len(DNS_PREFIX) :]
    name, sep, port_text = rest.rpartition(":")
    if not sep or not name:
        raise SettingsError(key, value, "expected dns:NAME:PORT")
    if "," in rest or any(c.isspace() for c in rest):
        raise SettingsError(key, value, "dns:NAME:PORT is one name; it cannot be mixed or listed")
    labels = name.removesuffix(".").split(".")
    if len(name) > 253 or not all(_DNS_LABEL.match(label) for label in labels):
        raise SettingsError(key, value, f"{name!r} is not a DNS name")
    if not port_text.isdigit() or not 1 <= int(port_text) < 65536:
        raise SettingsError(key, value, f"port {port_text!r} is not a number in 1..65535")
    return DnsTarget(name=name, port=int(port_text))


def parse_networks(key: str, value: object) -> tuple[IPNetwork, ...]:
    """Comma-separated CIDRs or addresses (`10.0.0.0/8, ::1`); empty means none."""
    networks = []
    for entry in str(value).split(","):
        entry = entry.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise SettingsError(key, value, f"{entry!r} is not an address or CIDR") from None
    return tuple(networks)


def inside(address: str, networks: tuple[IPNetwork, ...]) -> bool:
    """Whether `address` (a peer's IP text) lies in one of `networks`."""
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a dual-stack listener's view of an IPv4 peer
    return any(ip in network for network in networks)


def parse_size(key: str, value: object) -> int:
    """nginx sizes: bytes, or a number followed by k, m or g."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE.match(str(value).strip())
    if match is None or isinstance(value, bool):
        raise SettingsError(key, value, "expected a size such as 1048576, 10k or 1m")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]


def _parse_seconds(key: str, value: object) -> float:
    if isinstance(value, bool):
        raise SettingsError(key, value, "expected seconds")
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise SettingsError(key, value, "expected seconds as a number") from None
    if not seconds >= 0 or seconds == float("inf"):
        raise SettingsError(key, value, "expected a finite number of seconds >= 0")
    return seconds


def _parse_count(key: str, value: object, minimum: int) -> int:
    if isinstance(value, bool):
        raise SettingsError(key, value, "expected a whole number")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
        number = int(value.strip())
    else:
        raise SettingsError(key, value, "expected a whole number")
    if number < minimum:
        raise SettingsError(key, value, f"must be >= {minimum}")
    return number


def _parse_path(key: str, value: object) -> str:
    text = str(value)
    if not text.startswith("/") or any(c.isspace() for c in text):
        raise SettingsError(key, value, "expected a path starting with / and no spaces")
    return text


def _parse_policy(key: str, value: object) -> Policy:
    if value == "sticky":
        return "sticky"
    if value == "round_robin":
        return "round_robin"
    raise SettingsError(key, value, "expected sticky or round_robin")


_SECONDS_KEYS = (
    "fail_timeout",
    "keepalive_timeout",
    "proxy_connect_timeout",
    "proxy_read_timeout",
    "client_header_timeout",
    "client_body_timeout",
    "send_timeout",
    "health_interval",
    "health_timeout",
    "resolver_valid",
)
_COUNT_KEYS = {"max_fails": 0, "next_upstream_tries": 0, "keepalive": 0, "fall": 1, "rise": 1}
KNOWN_KEYS = frozenset(
    {
        "listen",
        "upstreams",
        "policy",
        "session_cookie_name",
        "client_max_body_size",
        "health_path",
        "status_prefix",
        "set_real_ip_from",
        "real_ip_header",
        *_SECONDS_KEYS,
        *_COUNT_KEYS,
    }
)
_CONNECT_TIMEOUT_KEYS = (
    "proxy_connect_timeout",
    "proxy_read_timeout",
    "health_timeout",
    "resolver_valid",
)
# Longest re-resolution interval: beyond an hour a moved address would go unnoticed too long.
_MAX_RESOLVER_VALID = 3600.0


def settings_from_mapping(raw: Mapping[str, object]) -> ProxySettings:
    """Strictly parse a mapping of lower-case keys (TOML member table or environment)."""
    values: dict[str, object] = {}
    for key, value in raw.items():
        if key in _IGNORED_KEYS:
            continue
        if key not in KNOWN_KEYS:
            raise SettingsError(key, value, "unknown key")
        if key == "listen":
            values["listen_host"], values["listen_port"] = parse_listen(
                key, str(value), any_port=True
            )
        elif key == "upstreams" and str(value).strip().startswith(DNS_PREFIX):
            values["discovery"] = parse_dns_target(str(value))
        elif key == "upstreams":
            values["upstreams"] = parse_upstreams(str(value))
        elif key == "policy":
            values["policy"] = _parse_policy(key, value)
        elif key == "session_cookie_name":
            text = str(value)
            if not _NAME.match(text):
                raise SettingsError(key, value, "expected a cookie name token")
            values[key] = text
        elif key == "client_max_body_size":
            values[key] = parse_size(key, value)
        elif key == "set_real_ip_from":
            values[key] = parse_networks(key, value)
        elif key == "real_ip_header":
            text = str(value).strip()
            if not _NAME.match(text):
                raise SettingsError(key, value, "expected a header name")
            values[key] = text
        elif key in ("health_path", "status_prefix"):
            path = _parse_path(key, value)
            values[key] = path.rstrip("/") if key == "status_prefix" else path
        elif key in _SECONDS_KEYS:
            seconds = values[key] = _parse_seconds(key, value)
            if key in _CONNECT_TIMEOUT_KEYS and seconds == 0:
                raise SettingsError(key, value, "must be > 0")
            if key == "resolver_valid" and seconds > _MAX_RESOLVER_VALID:
                raise SettingsError(key, value, f"must be <= {_MAX_RESOLVER_VALID:g}")
        else:
            values[key] = _parse_count(key, value, _COUNT_KEYS[key])
    if values.get("discovery") is not None and values.get("health_interval", 1.0) == 0:
        raise SettingsError(
            "health_interval",
            raw.get("health_interval"),
            "must be > 0 with dns: upstreams (a health check admits each new address)",
        )
    if not values.get("upstreams") and values.get("discovery") is None:
        raise SettingsError("upstreams", raw.get("upstreams"), "at least one upstream is required")
    if values.get("status_prefix") == "":
        raise SettingsError("status_prefix", raw.get("status_prefix"), "must not be /")
    return ProxySettings(**values)  # type: ignore[arg-type]


def settings_from_environ(environ: Mapping[str, str]) -> ProxySettings:
    """Every key as an upper-case variable: LISTEN, UPSTREAMS, POLICY, MAX_FAILS, ..."""
    raw = {key: environ[key.upper()] for key in KNOWN_KEYS if key.upper() in environ}
    return settings_from_mapping(raw)


def settings_from_toml(document: Mapping[str, object], name: str) -> ProxySettings:
    """Member `name` of the `[proxy]` role: role scalars merged with `[proxy.NAME]`."""
    role = document.get("proxy")
    if not isinstance(role, Mapping):
        raise SettingsError("proxy", role, "the topology has no [proxy] table")
    member = role.get(name)
    if not isinstance(member, Mapping):
        raise SettingsError("name", name, "no such [proxy.NAME] member in the topology")
    raw = {key: value for key, value in role.items() if not isinstance(value, Mapping)}
    raw.update(member)
    return settings_from_mapping(raw)
