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

`listen` is a comma-separated list of `host:port`, each optionally followed by nginx's
` ssl` (``"0.0.0.0:8080,0.0.0.0:8443 ssl"``); the first entry is `listen_host` and
`listen_port`. Every ssl listener serves `ssl_certificate` (the chain after the leaf)
with `ssl_certificate_key`, re-read on SIGHUP. `redirect_to_https` makes the plain
listeners answer 301 towards the first ssl one (status and health paths excepted);
`hsts_max_age` (seconds, 0: off) adds Strict-Transport-Security to answers over TLS.
The value parsers are in values.py.

Where the meaning differs from nginx: `proxy_connect_timeout` defaults to 5 s
(nginx: 60) because a dead app server should fail over fast; `keepalive` is the
number of idle connections kept per upstream server; `keepalive_timeout` bounds
both an idle client connection and an idle pooled upstream connection.
Zero switches a feature off: `max_fails = 0` (no passive checks),
`health_interval = 0` (no active checks), `client_max_body_size = 0` (no limit),
`next_upstream_tries = 0` (try every upstream once, as nginx).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from proxy.access_log import LogFormat, parse_access_log, parse_log_format
from proxy.errors import SettingsError
from proxy.values import (
    DEFAULT_CIPHERS,
    DEFAULT_PROTOCOLS,
    DNS_PREFIX,
    NAME,
    parse_bool,
    parse_ciphers,
    parse_count,
    parse_dns_target,
    parse_file,
    parse_listeners,
    parse_networks,
    parse_path,
    parse_protocols,
    parse_seconds,
    parse_upstreams,
)
from proxy.values import DnsTarget as DnsTarget
from proxy.values import IPNetwork as IPNetwork
from proxy.values import Listener as Listener
from proxy.values import UpstreamSpec as UpstreamSpec
from proxy.values import inside as inside
from proxy.values import parse_listen as parse_listen
from proxy.values import parse_size as parse_size

Policy = Literal["sticky", "round_robin"]

# Keys of a cluster member table that describe the topology, not the proxy.
_IGNORED_KEYS = frozenset({"host"})


@dataclass(frozen=True, slots=True)
class ProxySettings:
    # `listen`: the first one is the proxy's address (listen_host, listen_port).
    listeners: tuple[Listener, ...] = (Listener("127.0.0.1", 8080),)
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
    # TLS on `listen ... ssl` (nginx's names); one certificate for every ssl listener.
    ssl_certificate: str = ""
    ssl_certificate_key: str = ""
    ssl_protocols: tuple[str, ...] = DEFAULT_PROTOCOLS
    ssl_ciphers: str = DEFAULT_CIPHERS
    redirect_to_https: bool = False
    hsts_max_age: int = 0
    access_log: str = "off"
    log_format: LogFormat = "text"

    @property
    def listen_host(self) -> str:
        return self.listeners[0].host

    @property
    def listen_port(self) -> int:
        return self.listeners[0].port

    @property
    def ssl_listeners(self) -> tuple[Listener, ...]:
        return tuple(listener for listener in self.listeners if listener.ssl)

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
_COUNT_KEYS = {
    "max_fails": 0,
    "next_upstream_tries": 0,
    "keepalive": 0,
    "fall": 1,
    "rise": 1,
    "hsts_max_age": 0,
}
# How each TLS key is read (the certificate files are read when the proxy starts).
_TLS_PARSERS = {
    "ssl_certificate": parse_file,
    "ssl_certificate_key": parse_file,
    "ssl_protocols": parse_protocols,
    "ssl_ciphers": parse_ciphers,
    "redirect_to_https": parse_bool,
}
_LOG_PARSERS = {"access_log": parse_access_log, "log_format": parse_log_format}
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
        *_TLS_PARSERS,
        *_LOG_PARSERS,
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
            values["listeners"] = parse_listeners(key, value)
        elif key in _TLS_PARSERS:
            values[key] = _TLS_PARSERS[key](key, value)
        elif key in _LOG_PARSERS:
            values[key] = _LOG_PARSERS[key](key, value)
        elif key == "upstreams" and str(value).strip().startswith(DNS_PREFIX):
            values["discovery"] = parse_dns_target(str(value))
        elif key == "upstreams":
            values["upstreams"] = parse_upstreams(str(value))
        elif key == "policy":
            values["policy"] = parse_policy(key, value)
        elif key == "session_cookie_name":
            text = str(value)
            if not NAME.match(text):
                raise SettingsError(key, value, "expected a cookie name token")
            values[key] = text
        elif key == "client_max_body_size":
            values[key] = parse_size(key, value)
        elif key == "set_real_ip_from":
            values[key] = parse_networks(key, value)
        elif key == "real_ip_header":
            text = str(value).strip()
            if not NAME.match(text):
                raise SettingsError(key, value, "expected a header name")
            values[key] = text
        elif key in ("health_path", "status_prefix"):
            path = parse_path(key, value)
            values[key] = path.rstrip("/") if key == "status_prefix" else path
        elif key in _SECONDS_KEYS:
            seconds = values[key] = parse_seconds(key, value)
            if key in _CONNECT_TIMEOUT_KEYS and seconds == 0:
                raise SettingsError(key, value, "must be > 0")
            if key == "resolver_valid" and seconds > _MAX_RESOLVER_VALID:
                raise SettingsError(key, value, f"must be <= {_MAX_RESOLVER_VALID:g}")
        else:
            values[key] = parse_count(key, value, _COUNT_KEYS[key])
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
    settings = ProxySettings(**values)  # type: ignore[arg-type]
    _check_tls(settings, raw)
    return settings


def parse_policy(key: str, value: object) -> Policy:
    if value == "sticky":
        return "sticky"
    if value == "round_robin":
        return "round_robin"
    raise SettingsError(key, value, "expected sticky or round_robin")


def _check_tls(settings: ProxySettings, raw: Mapping[str, object]) -> None:
    """What the TLS keys need of each other and of `listen`."""
    secure = settings.ssl_listeners
    if secure and not settings.ssl_certificate:
        raise SettingsError(
            "ssl_certificate", raw.get("ssl_certificate", ""), f"required by listen {secure[0]}"
        )
    if settings.ssl_certificate and not settings.ssl_certificate_key:
        raise SettingsError(
            "ssl_certificate_key",
            raw.get("ssl_certificate_key", ""),
            "required with ssl_certificate (the PEM file of its private key)",
        )
    if settings.ssl_certificate_key and not settings.ssl_certificate:
        raise SettingsError(
            "ssl_certificate",
            raw.get("ssl_certificate", ""),
            "required with ssl_certificate_key (the PEM file of the certificate chain)",
        )
    if settings.redirect_to_https and not secure:
        raise SettingsError(
            "redirect_to_https", raw.get("redirect_to_https"), "needs a listen entry with ssl"
        )


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
