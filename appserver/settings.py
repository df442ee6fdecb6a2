"""App server settings from one explicit mapping: a TOML member table or the environment.

The session settings (memcached nodes, stickiness, timeouts...) belong to sessionstore and are
parsed by `SessionStoreSettings.from_mapping` from the same mapping; this module adds the keys
only the app server knows and rejects keys nobody knows (TOML only: the environment holds
plenty of unrelated variables).
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from netnames import address_text
from sessionstore import SessionStoreSettings

from .errors import ConfigError

# Keys of a member table that are cluster metadata, not server settings.
IGNORED_KEYS = frozenset({"host"})

_SIZE = re.compile(r"(\d+)\s*([kKmMgG]?)")
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})

# "text": error lines as `time logger LEVEL message`, access lines in nginx's combined format
# (plus request id and time); "json": every line one JSON object.
LogFormat = Literal["text", "json"]


@dataclass(frozen=True, slots=True)
class AppServerSettings:
    """Everything one app server needs; `session` is handed to sessionstore unchanged."""

    listen_host: str
    listen_port: int
    session: SessionStoreSettings
    client_max_body_size: int = 1024**2
    shutdown_timeout: float = 10.0
    max_session_attributes: int = 1000
    max_attribute_name_length: int = 1024
    # On, as nginx's access_log and Tomcat's AccessLogValve are out of the box.
    access_log: bool = True
    log_format: LogFormat = "text"

    @property
    def jvm_route(self) -> str:
        return self.session.jvm_route

    @property
    def listen(self) -> str:
        return address_text(self.listen_host, self.listen_port)

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> AppServerSettings:
        """Strict parsing of a member mapping (native TOML types or strings)."""
        unknown = sorted(set(values) - known_keys() - IGNORED_KEYS)
        if unknown:
            raise ConfigError(unknown[0], None, "is not a setting the app server knows")
        if values.get("listen") is None:
            raise ConfigError("listen", None, "is required (host:port)")
        host, port = parse_listen(values["listen"])
        return cls(
            listen_host=host,
            listen_port=port,
            session=SessionStoreSettings.from_mapping(values),
            client_max_body_size=_size(values, "client_max_body_size", 1024**2),
            shutdown_timeout=_seconds(values, "shutdown_timeout", 10.0),
            max_session_attributes=_count(values, "max_session_attributes", 1000),
            max_attribute_name_length=_count(values, "max_attribute_name_length", 1024),
            access_log=_flag(values, "access_log", True),
            log_format=_log_format(values),
        )

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> AppServerSettings:
        """Every key as an upper-case variable: LISTEN, JVM_ROUTE, MEMCACHED_NODES, ...

        An empty variable counts as unset (compose files write `FAILOVER_NODES: ${X:-}`).
        """
        values = {key: environ.get(key.upper(), "") for key in known_keys()}
        return cls.from_mapping({key: value for key, value in values.items() if value})

    @classmethod
    def from_toml(cls, path: Path, name: str) -> AppServerSettings:
        return cls.from_mapping(member_table(path, name))


def known_keys() -> frozenset[str]:
    """The app server's own keys plus every key sessionstore's settings take."""
    own = {f.name for f in dataclasses.fields(AppServerSettings)} - {"listen_host", "listen_port"}
    own = (own - {"session"}) | {"listen"}
    return frozenset(own | {f.name for f in dataclasses.fields(SessionStoreSettings)})


def member_table(path: Path, name: str) -> dict[str, object]:
    """Scalar keys of [appserver] (defaults) merged with [appserver.NAME] (the member)."""
    try:
        with path.open("rb") as file:
            topology = tomllib.load(file)
    except OSError as exc:
        raise ConfigError("config", str(path), f"cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", str(path), f"is not valid TOML: {exc}") from None
    role = topology.get("appserver")
    if not isinstance(role, dict):
        raise ConfigError("config", str(path), "has no [appserver] table")
    member = role.get(name)
    if not isinstance(member, dict):
        members = ", ".join(k for k, v in role.items() if isinstance(v, dict)) or "none"
        raise ConfigError("name", name, f"is not an [appserver.NAME] table (members: {members})")
    defaults = {k: v for k, v in role.items() if not isinstance(v, dict)}
    return defaults | member


def parse_listen(value: object) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port); port 0 asks the OS for a free one."""
    if not isinstance(value, str):
        raise ConfigError("listen", value, "is not host:port")
    host, sep, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise ConfigError("listen", value, "is not host:port")
    return host, int(port)


def _size(values: Mapping[str, object], key: str, default: int) -> int:
    """Bytes as an int or nginx style '1m', '512k'."""
    value = values.get(key, default)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = _SIZE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None or int(match[1]) == 0:
        raise ConfigError(key, value, "is not a positive size (bytes, or like '512k', '1m')")
    return int(match[1]) * _SIZE_UNITS[match[2].lower()]


def _seconds(values: Mapping[str, object], key: str, default: float) -> float:
    value = values.get(key, default)
    try:
        seconds = float(value) if not isinstance(value, bool) else -1.0  # type: ignore[arg-type]
    except (TypeError, ValueError):
        seconds = -1.0
    if not seconds > 0 or seconds == float("inf"):
        raise ConfigError(key, value, "is not a positive number of seconds")
    return seconds


def _count(values: Mapping[str, object], key: str, default: int) -> int:
    value = values.get(key, default)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    text = value.strip() if isinstance(value, str) else ""
    if text.isascii() and text.isdigit() and int(text) > 0:
        return int(text)
    raise ConfigError(key, value, "is not a positive integer")


def _flag(values: Mapping[str, object], key: str, default: bool) -> bool:
    value = values.get(key, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigError(key, value, "is not a boolean (true/false)")


def _log_format(values: Mapping[str, object]) -> LogFormat:
    value = values.get("log_format", "text")
    text = value.strip().lower() if isinstance(value, str) else None
    if text == "text":
        return "text"
    if text == "json":
        return "json"
    raise ConfigError("log_format", value, 'is not "text" or "json"')
