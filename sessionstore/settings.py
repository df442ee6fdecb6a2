"""SessionStoreSettings: a frozen dataclass built from a TOML table or an environment mapping.

Strict parsing; every error is a SettingsError naming the key and the bad value. Keys this
module does not know are ignored (the app server decides what is unknown).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Literal, NoReturn, cast

from .client_address import DEFAULT_TRUSTED_PROXIES, Network, parse_networks
from .errors import NodeListError, SettingsError
from .ids import ROUTE_PATTERN, url_parameter
from .nodes import (
    DnsNodes,
    NodeSpec,
    parse_dns_nodes,
    parse_failover_nodes,
    parse_node_list,
)

Transcoder = Literal["json", "msgpack"]
LockingKind = Literal["none", "all", "auto", "uriPattern"]
CookieSecure = Literal["auto", "always", "never"]
SameSite = Literal["Lax", "Strict", "None"]

_ROUTE_RE = re.compile(ROUTE_PATTERN)
_PREFIX_RE = re.compile(r"[A-Za-z0-9_.:-]{0,64}")
_COOKIE_NAME_RE = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}")
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
_MAX_EXPIRY = 30 * 24 * 3600
_INT_RE = re.compile(r"[+-]?[0-9]{1,18}")
_MAX_COUNT = 1_000_000_000
# Cookie attribute values are written into Set-Cookie as they are: no ';', ',', spaces or
# control characters (RFC 6265 path-value, a host name for the domain).
_COOKIE_PATH_RE = re.compile(r"/[\x21-\x2b\x2d-\x3a\x3c-\x7e]{0,255}")
_COOKIE_DOMAIN_RE = re.compile(r"\.?[A-Za-z0-9]([A-Za-z0-9-]{0,62}\.?)*[A-Za-z0-9]?")
_SAME_SITE = {"lax": "Lax", "strict": "Strict", "none": "None"}
_TRACKING_MODES = {frozenset({"cookie", "url"}), frozenset({"cookie"})}
_MAX_COOKIE_AGE = 400 * 24 * 3600  # what browsers cap a cookie's lifetime to
_MAX_LIFETIME = 10 * 365 * 24 * 3600
UNLIMITED = -1  # max_active_sessions: no cap, as Tomcat's maxActiveSessions = -1


@dataclass(frozen=True)
class SessionStoreSettings:
    jvm_route: str
    memcached_nodes: str
    failover_nodes: str = ""
    sticky: bool = True
    locking_mode: str = "none"
    request_uri_ignore_pattern: str = r".*\.(ico|png|gif|jpg|css|js)$"
    session_backup_async: bool = False
    # MSM's default is 100 ms; ours outlasts operation_timeout so that under load a sync
    # backup still completes before the response, as ARCHITECTURE.md promises.
    session_backup_timeout: float = 1.0
    operation_timeout: float = 0.5
    node_retry_interval: float = 10.0
    lock_timeout: float = 5.0
    storage_key_prefix: str = ""
    transcoder: Transcoder = "json"
    max_inactive_interval: float = 1800.0
    session_cookie_name: str = "JSESSIONID"
    max_session_size: int = 1_000_000
    resolver_valid: float = 5.0
    # Sticky sessions held in memory (Tomcat's maxActiveSessions; -1: no cap). At the cap the
    # least recently used one memcached holds is pushed out of memory; it loads back from
    # memcached on its next request.
    max_active_sessions: int = 100_000
    # New sessions per client address: a token bucket holding session_create_burst tokens,
    # refilled at session_create_rate per second; a new session's first write takes one
    # (data-less sessions cost memcached nothing and are not counted). 0: no limit.
    session_create_rate: float = 20.0
    session_create_burst: int = 100
    # Peers whose X-Real-IP / X-Forwarded-For name the client (RemoteIpValve's
    # internalProxies): comma-separated addresses or CIDR networks; "none" (or "" in TOML)
    # trusts no peer.
    trusted_proxies: str = DEFAULT_TRUSTED_PROXIES
    # The session cookie's attributes (Tomcat's sessionCookiePath, sessionCookieDomain, ...).
    # secure: "auto" when the request is https (X-Forwarded-Proto from trusted_proxies
    # counts); same_site "None" always adds Secure, as browsers refuse it without.
    session_cookie_path: str = "/"
    session_cookie_domain: str = ""  # none: the cookie goes back to the host that set it
    session_cookie_secure: CookieSecure = "auto"
    session_cookie_same_site: SameSite = "Lax"
    session_cookie_http_only: bool = True
    session_cookie_max_age: float = 0.0  # 0: none, a browser-session cookie
    # "cookie,url" (Tomcat's default tracking modes) or "cookie": then ;jsessionid= in a
    # request is ignored and never written into links (ids in URLs leak into logs, Referer).
    tracking_modes: str = "cookie,url"
    # Absolute lifetime since creation, beside the idle max_inactive_interval; 0: none.
    max_session_lifetime: float = 0.0

    def __post_init__(self) -> None:
        if not _ROUTE_RE.fullmatch(self.jvm_route):
            _fail("jvm_route", self.jvm_route, "is not [A-Za-z0-9_-]{1,32}")
        if not isinstance(self.memcached_nodes, str):
            _fail("memcached_nodes", self.memcached_nodes, "is not a string")
        nodes = self.nodes
        if self.discovery is not None and self.failover_nodes.strip():
            _fail("failover_nodes", self.failover_nodes,
                  "is set but memcached_nodes is a dns: name (discovered nodes have no host "
                  "relation to this server)")
        try:
            parse_failover_nodes(self.failover_nodes, nodes)
        except NodeListError as exc:
            raise SettingsError("failover_nodes", self.failover_nodes, str(exc)) from None
        if self.failover_nodes.strip() and not self.sticky:
            _fail("failover_nodes", self.failover_nodes,
                  "is set but sticky = false (failover nodes apply to sticky mode only)")
        self.locking  # noqa: B018 - validates locking_mode
        try:
            re.compile(self.request_uri_ignore_pattern)
        except re.error as exc:
            _fail("request_uri_ignore_pattern", self.request_uri_ignore_pattern,
                  f"is not a regular expression ({exc})")
        for name in ("session_backup_timeout", "operation_timeout", "node_retry_interval",
                     "lock_timeout", "resolver_valid"):
            _check_duration(name, getattr(self, name), maximum=3600.0)
        _check_duration("max_inactive_interval", self.max_inactive_interval,
                        maximum=float(_MAX_EXPIRY))
        if not _PREFIX_RE.fullmatch(self.storage_key_prefix):
            _fail("storage_key_prefix", self.storage_key_prefix, "is not [A-Za-z0-9_.:-]{0,64}")
        if self.transcoder not in ("json", "msgpack"):
            _fail("transcoder", self.transcoder, "is not one of json, msgpack")
        if not _COOKIE_NAME_RE.fullmatch(self.session_cookie_name):
            _fail("session_cookie_name", self.session_cookie_name, "is not a cookie name")
        if (isinstance(self.max_session_size, bool) or not isinstance(self.max_session_size, int)
                or not 1024 <= self.max_session_size <= 128 * 1024 * 1024):
            _fail("max_session_size", self.max_session_size, "is not an integer 1024..134217728")
        for name in ("sticky", "session_backup_async"):
            if not isinstance(getattr(self, name), bool):
                _fail(name, getattr(self, name), "is not a boolean")
        if not _is_int(self.max_active_sessions) or not (
                self.max_active_sessions == UNLIMITED
                or 1 <= self.max_active_sessions <= _MAX_COUNT):
            _fail("max_active_sessions", self.max_active_sessions,
                  f"is not -1 (no cap) or an integer 1..{_MAX_COUNT}")
        rate = self.session_create_rate
        if (isinstance(rate, bool) or not isinstance(rate, int | float)
                or not math.isfinite(rate) or not 0 <= rate <= 1_000_000):
            _fail("session_create_rate", rate,
                  "is not a rate per second 0..1000000 (0: no limit)")
        if not _is_int(self.session_create_burst) or not (
                1 <= self.session_create_burst <= 1_000_000):
            _fail("session_create_burst", self.session_create_burst,
                  "is not an integer 1..1000000")
        self.trusted_networks  # noqa: B018 - validates trusted_proxies
        self._check_cookie_settings()
        self.url_tracking  # noqa: B018 - validates tracking_modes
        _check_bounded("max_session_lifetime", self.max_session_lifetime, _MAX_LIFETIME)

    def _check_cookie_settings(self) -> None:
        path, domain = self.session_cookie_path, self.session_cookie_domain
        if not isinstance(path, str) or not _COOKIE_PATH_RE.fullmatch(path):
            _fail("session_cookie_path", path,
                  "is not a URL path starting with / (no spaces, ';' or ',')")
        if not isinstance(domain, str) or (domain and (
                len(domain) > 253 or not _COOKIE_DOMAIN_RE.fullmatch(domain))):
            _fail("session_cookie_domain", domain, "is not a domain name (or \"\" for none)")
        if self.session_cookie_secure not in ("auto", "always", "never"):
            _fail("session_cookie_secure", self.session_cookie_secure,
                  "is not one of auto, always, never")
        same_site = self.session_cookie_same_site
        canonical = _SAME_SITE.get(same_site.lower()) if isinstance(same_site, str) else None
        if canonical is None:
            _fail("session_cookie_same_site", same_site, "is not one of Lax, Strict, None")
        object.__setattr__(self, "session_cookie_same_site", canonical)
        if canonical == "None" and self.session_cookie_secure == "never":
            _fail("session_cookie_secure", "never",
                  "contradicts session_cookie_same_site = None (browsers need Secure for it)")
        if not isinstance(self.session_cookie_http_only, bool):
            _fail("session_cookie_http_only", self.session_cookie_http_only, "is not a boolean")
        _check_bounded("session_cookie_max_age", self.session_cookie_max_age, _MAX_COOKIE_AGE)

    @cached_property
    def url_tracking(self) -> bool:
        """True when ;jsessionid= in a URL is read and written (tracking_modes has "url")."""
        modes = self.tracking_modes
        if not isinstance(modes, str) or frozenset(
                mode.strip().lower() for mode in modes.split(",")) not in _TRACKING_MODES:
            _fail("tracking_modes", modes, 'is not "cookie,url" or "cookie"')
        return "url" in modes.lower()

    @property
    def discovery(self) -> DnsNodes | None:
        """The DNS name and port when memcached_nodes is "dns:NAME:PORT", else None."""
        try:
            return parse_dns_nodes(self.memcached_nodes)
        except NodeListError as exc:
            raise SettingsError("memcached_nodes", self.memcached_nodes, str(exc)) from None

    @property
    def nodes(self) -> tuple[NodeSpec, ...]:
        """The static node list; empty for "dns:NAME:PORT" (nodes are found at run time)."""
        if self.discovery is not None:
            return ()
        try:
            return parse_node_list(self.memcached_nodes)
        except NodeListError as exc:
            raise SettingsError("memcached_nodes", self.memcached_nodes, str(exc)) from None

    @cached_property
    def session_url_parameter(self) -> str:
        """`;<cookie name in lower case>=`: where a URL carries the session id."""
        return url_parameter(self.session_cookie_name)

    @property
    def trusted_networks(self) -> tuple[Network, ...]:
        """trusted_proxies parsed: the peers whose forwarding headers name the client."""
        if not isinstance(self.trusted_proxies, str):
            _fail("trusted_proxies", self.trusted_proxies, "is not a string")
        if self.trusted_proxies.strip().lower() == "none":
            return ()  # the environment cannot say "": an empty variable counts as unset
        try:
            return parse_networks(self.trusted_proxies)
        except ValueError as exc:
            raise SettingsError("trusted_proxies", self.trusted_proxies, str(exc)) from None

    @property
    def max_sessions_in_memory(self) -> int | None:
        """max_active_sessions as a bound; None when there is none (-1)."""
        return None if self.max_active_sessions == UNLIMITED else self.max_active_sessions

    @property
    def failover(self) -> frozenset[str]:
        return parse_failover_nodes(self.failover_nodes, self.nodes)

    @property
    def locking(self) -> tuple[LockingKind, re.Pattern[str] | None]:
        """The locking mode and, for uriPattern:<regex>, the compiled pattern."""
        mode = self.locking_mode
        if mode in ("none", "all", "auto"):
            return cast(LockingKind, mode), None
        if mode.startswith("uriPattern:"):
            try:
                return "uriPattern", re.compile(mode.removeprefix("uriPattern:"))
            except re.error as exc:
                _fail("locking_mode", mode, f"has a bad regular expression ({exc})")
        _fail("locking_mode", mode, "is not none, all, auto or uriPattern:<regex>")

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> SessionStoreSettings:
        """Build from a TOML member table (native types) or environment strings."""
        kwargs: dict[str, object] = {}
        for field in fields(cls):
            if field.name not in values:
                continue
            raw = values[field.name]
            kind = field.type
            if kind == "bool":
                kwargs[field.name] = _parse_bool(field.name, raw)
            elif kind == "float":
                kwargs[field.name] = _parse_float(field.name, raw)
            elif kind == "int":
                kwargs[field.name] = _parse_int(field.name, raw)
            else:
                if not isinstance(raw, str):
                    _fail(field.name, raw, "is not a string")
                kwargs[field.name] = raw
        for required in ("jvm_route", "memcached_nodes"):
            if required not in kwargs:
                _fail(required, None, "is required")
        return cls(**kwargs)  # type: ignore[arg-type]


def _fail(key: str, value: object, reason: str) -> NoReturn:
    raise SettingsError(key, value, reason)


def _parse_bool(key: str, raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
        return raw.strip().lower() in _TRUE
    raise SettingsError(key, raw, "is not a boolean (true/false)")


def _parse_float(key: str, raw: object) -> float:
    if isinstance(raw, bool):
        raise SettingsError(key, raw, "is not a number")
    if isinstance(raw, int | float):
        value = float(raw)
    elif isinstance(raw, str):
        try:
            value = float(raw.strip())
        except ValueError:
            raise SettingsError(key, raw, "is not a number") from None
    else:
        raise SettingsError(key, raw, "is not a number")
    if not math.isfinite(value):
        raise SettingsError(key, raw, "is not a finite number")
    return value


def _parse_int(key: str, raw: object) -> int:
    if _is_int(raw):
        return cast(int, raw)
    if isinstance(raw, str) and _INT_RE.fullmatch(raw.strip()):
        return int(raw.strip())
    raise SettingsError(key, raw, "is not an integer")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_bounded(key: str, value: object, maximum: float) -> None:
    """A number of seconds where 0 means "none"."""
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or not 0 <= value <= maximum):
        raise SettingsError(key, value, f"is not 0 (none) or seconds up to {maximum:g}")


def _check_duration(key: str, value: object, maximum: float) -> None:
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or not 0 < value <= maximum):
        raise SettingsError(key, value, f"is not a duration in seconds (0 < value <= {maximum:g})")
