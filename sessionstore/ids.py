"""Session ids in MSM's sticky format, `<32 HEX>-<node id>.<route>`, and memcached keys.

Pure: no I/O. A `SessionId` only comes out of `new_session_id` or `parse_session_id`, so every
memcached key (built by `storage_key` alone) stems from a validated id.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

RANDOM_HEX_LENGTH = 32
NODE_ID_PATTERN = r"[A-Za-z0-9_]{1,16}"
ROUTE_PATTERN = r"[A-Za-z0-9_-]{1,32}"
MAX_SESSION_ID_LENGTH = RANDOM_HEX_LENGTH + 1 + 16 + 1 + 32

_SESSION_ID_RE = re.compile(
    rf"(?P<random>[0-9A-F]{{{RANDOM_HEX_LENGTH}}})-(?P<node>{NODE_ID_PATTERN})\.(?P<route>{ROUTE_PATTERN})"
)

KeyKind = Literal["session", "backup", "lock"]
_KIND_PREFIX: dict[KeyKind, str] = {"session": "", "backup": "bak:", "lock": "lock:"}


@dataclass(frozen=True, slots=True)
class SessionId:
    """A parsed, valid session id. `text` is its wire form (cookie, URL, memcached key)."""

    random: str
    node: str
    route: str
    text: str

    def with_node(self, node: str) -> SessionId:
        """The same session backed up on another node (random part unchanged)."""
        return make_session_id(self.random, node, self.route)

    def with_route(self, route: str) -> SessionId:
        """The same session owned by another app server (random part unchanged)."""
        return make_session_id(self.random, self.node, route)

    def __str__(self) -> str:
        return self.text


def make_session_id(random: str, node: str, route: str) -> SessionId:
    return SessionId(random, node, route, f"{random}-{node}.{route}")


def new_session_id(node: str, route: str) -> SessionId:
    """128 random bits from `secrets`, upper-case hex, suffixed with node and route."""
    return make_session_id(secrets.token_hex(16).upper(), node, route)


def parse_session_id(text: str) -> SessionId | None:
    """The id, or None when `text` is not a well-formed session id (length checked first)."""
    if len(text) > MAX_SESSION_ID_LENGTH:
        return None
    return _parse(text)


# Non-sticky requests parse the same few ids over and over; a SessionId is immutable, and the
# length check above bounds what the cache can hold (4096 short strings).
@lru_cache(maxsize=4096)
def _parse(text: str) -> SessionId | None:
    match = _SESSION_ID_RE.fullmatch(text)
    if match is None:
        return None
    return SessionId(match["random"], match["node"], match["route"], text)


def storage_key(prefix: str, session_id: SessionId, kind: KeyKind = "session") -> bytes:
    """The one place a memcached key is built: prefix + (``bak:`` | ``lock:`` | nothing) + id."""
    return f"{prefix}{_KIND_PREFIX[kind]}{session_id.text}".encode("ascii")


def url_parameter(cookie_name: str) -> str:
    """The path parameter that carries the session id when cookies are off: the cookie's
    name in lower case, as Tomcat writes it (`;jsessionid=` for JSESSIONID), so that the
    proxy routes by what the app server writes for any `session_cookie_name`."""
    return ";" + cookie_name.lower() + "="
