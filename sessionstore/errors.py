"""The sessionstore error family: one base class, typed fields, one-line messages."""

from __future__ import annotations


class SessionStoreError(Exception):
    """Base of every error sessionstore raises on purpose."""


class SettingsError(SessionStoreError, ValueError):
    """A configuration value is missing or malformed; names the key and the value."""

    def __init__(self, key: str, value: object, reason: str) -> None:
        self.key = key
        self.value = value
        self.reason = reason
        super().__init__(f"{key}: {value!r} {reason}")


class UnstorableValueError(SessionStoreError, TypeError):
    """A session attribute the transcoder cannot store, refused when it is set."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"session attribute {name!r}: {reason}")


class SessionTooLargeError(SessionStoreError):
    """The encoded session exceeds max_session_size; the previous backup stays intact."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"session too large: {size} bytes, limit {limit}")


class MemcachedError(SessionStoreError):
    """A memcached operation did not complete cleanly."""

    def __init__(self, node: str, operation: str, reason: str) -> None:
        self.node = node
        self.operation = operation
        self.reason = reason
        super().__init__(f"memcached {node} {operation}: {reason}")


class NodeFailureError(MemcachedError):
    """Transport failure (refused, reset, EOF, timeout, cancel): the node counts as dead."""


class ServerReplyError(MemcachedError):
    """The node answered, but with an error reply (e.g. SERVER_ERROR object too large)."""


class LockTimeoutError(SessionStoreError):
    """A non-sticky session lock could not be acquired within lock_timeout."""

    def __init__(self, session_id: str, waited: float) -> None:
        self.session_id = session_id
        self.waited = waited
        super().__init__(
            f"session {session_id} is locked by another request (waited {waited:.1f}s)")
