"""The values proxy settings are made of, and their strict parsers. Pure: no I/O.

Each parser takes the key it parses for, so that its SettingsError names the key and
the bad value: addresses and `listen` lists, upstream lists and `dns:` targets, CIDR
lists, nginx sizes, seconds, counts, paths, booleans, and the TLS protocol names and
cipher strings of `ssl_protocols` and `ssl_ciphers`.
"""

from __future__ import annotations

import ipaddress
import re
import ssl
from collections.abc import Iterable
from dataclasses import dataclass

from netnames import address_text
from proxy.errors import SettingsError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# A DNS name: dot-separated labels of letters, digits, hyphens and underscores (SRV-style
# names and Docker service names use them), no leading or trailing hyphen.
_DNS_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")
DNS_PREFIX = "dns:"
_SIZE = re.compile(r"^(\d+)\s*([kKmMgG]?)$")
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024 * 1024, "g": 1024 * 1024 * 1024}

DEFAULT_PROTOCOLS = ("TLSv1.2", "TLSv1.3")
# Mozilla's "intermediate" list: forward secrecy and AEAD only. It governs TLS 1.2 and
# older; OpenSSL's TLS 1.3 suites are all good and Python cannot change them anyway.
DEFAULT_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
        "DHE-RSA-CHACHA20-POLY1305",
    )
)
_VERSIONS = {
    "TLSv1": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}
_ORDER = list(_VERSIONS)
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


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
        return address_text(self.host, self.port)


@dataclass(frozen=True, slots=True)
class DnsTarget:
    """`upstreams = "dns:NAME:PORT"`: every address NAME resolves to, on PORT."""

    name: str
    port: int

    @property
    def label(self) -> str:
        return f"{DNS_PREFIX}{self.name}:{self.port}"


@dataclass(frozen=True, slots=True)
class Listener:
    """One entry of `listen`: nginx's `listen host:port [ssl]`."""

    host: str
    port: int
    ssl: bool = False

    @property
    def address(self) -> str:
        return address_text(self.host, self.port)

    def __str__(self) -> str:
        return f"{self.address} ssl" if self.ssl else self.address


def parse_listen(key: str, value: str, *, any_port: bool = False) -> tuple[str, int]:
    """`host:port`; with `any_port`, port 0 (the system picks one) is allowed."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise SettingsError(key, value, "expected host:port")
    lowest = 0 if any_port else 1
    if not port_text.isdigit() or not lowest <= int(port_text) < 65536:
        raise SettingsError(key, value, f"port {port_text!r} is not a number in {lowest}..65535")
    return host.strip("[]"), int(port_text)


def parse_listeners(key: str, value: object) -> tuple[Listener, ...]:
    """`host:port[ ssl],...` (`"0.0.0.0:8080,0.0.0.0:8443 ssl"`); port 0 lets the system
    pick one. Two entries on one port (other than 0) cannot both listen."""
    text = str(value)
    listeners: list[Listener] = []
    for entry in text.split(","):
        address, *options = entry.split() or [""]
        if not address:
            raise SettingsError(key, value, "empty entry; expected host:port[ ssl],...")
        if any(option != "ssl" for option in options) or len(options) > 1:
            raise SettingsError(
                key, value, f"entry {entry.strip()!r}: the only option after host:port is ssl"
            )
        try:
            host, port = parse_listen(key, address, any_port=True)
        except SettingsError as error:
            raise SettingsError(key, value, f"entry {entry.strip()!r}: {error.why}") from None
        if port and any(other.port == port for other in listeners):
            raise SettingsError(key, value, f"port {port} appears twice")
        listeners.append(Listener(host, port, ssl=bool(options)))
    return tuple(listeners)


def parse_upstreams(value: str) -> tuple[UpstreamSpec, ...]:
    key = "upstreams"
    specs: list[UpstreamSpec] = []
    for entry in value.split(","):
        entry = entry.strip()
        if not entry:
            raise SettingsError(key, value, "empty entry")
        name, eq, rest = entry.partition("=")
        name = name.strip()
        if not eq or not NAME.match(name):
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


def parse_seconds(key: str, value: object) -> float:
    if isinstance(value, bool):
        raise SettingsError(key, value, "expected seconds")
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise SettingsError(key, value, "expected seconds as a number") from None
    if not seconds >= 0 or seconds == float("inf"):
        raise SettingsError(key, value, "expected a finite number of seconds >= 0")
    return seconds


def parse_count(key: str, value: object, minimum: int) -> int:
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


def parse_bool(key: str, value: object) -> bool:
    """A TOML boolean, or in the environment true/false (also yes/no, on/off, 1/0)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise SettingsError(key, value, "expected true or false")


def parse_path(key: str, value: object) -> str:
    text = str(value)
    if not text.startswith("/") or any(c.isspace() for c in text):
        raise SettingsError(key, value, "expected a path starting with / and no spaces")
    return text


def parse_file(key: str, value: object) -> str:
    """A file name (read when the proxy starts, and again on SIGHUP)."""
    text = str(value).strip()
    if not text or "\0" in text:
        raise SettingsError(key, value, "expected the path of a PEM file")
    return text


def parse_protocols(key: str, value: object) -> tuple[str, ...]:
    """nginx's `ssl_protocols TLSv1.2 TLSv1.3` (spaces or commas between names)."""
    names = tuple(str(value).replace(",", " ").split())
    protocol_range(names)  # raises SettingsError naming ssl_protocols
    return names


def protocol_range(names: Iterable[str]) -> tuple[ssl.TLSVersion, ssl.TLSVersion]:
    """The lowest and highest TLS version named in `ssl_protocols`; they must be a contiguous
    run, because OpenSSL sets a range (nginx's holes need deprecated per-version options)."""
    protocols = tuple(names)
    unknown = [name for name in protocols if name not in _VERSIONS]
    if unknown or not protocols:
        why = f"unknown protocol {unknown[0]!r}" if unknown else "names no protocol"
        raise SettingsError("ssl_protocols", " ".join(protocols), f"{why}; use {' '.join(_ORDER)}")
    indexes = sorted({_ORDER.index(name) for name in protocols})
    if indexes != list(range(indexes[0], indexes[-1] + 1)):
        raise SettingsError(
            "ssl_protocols",
            " ".join(protocols),
            "must be a contiguous range, such as TLSv1.2 TLSv1.3",
        )
    return _VERSIONS[_ORDER[indexes[0]]], _VERSIONS[_ORDER[indexes[-1]]]


def parse_ciphers(key: str, value: object) -> str:
    """An OpenSSL cipher string; one that selects no cipher is refused here, not at start."""
    text = str(value).strip()
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(text)
    except ssl.SSLError:
        raise SettingsError(key, value, "OpenSSL selects no cipher from it") from None
    return text
