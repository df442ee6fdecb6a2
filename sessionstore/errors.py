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


class NodeListError(SessionStoreError, ValueError):
    """The node list or failover list is malformed; the message says how (settings.py
    turns it into a SettingsError naming the key)."""


class CorruptRecordError(SessionStoreError, ValueError):
    """Stored bytes that are not a session record (foreign data, truncated, other format)."""


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


class LoopStalledError(MemcachedError):
    """The operation ran out of time while this process's event loop was stalled (its
    timeout fired more than operation_timeout late): the connection is discarded like any
    other, but the node is not to blame and is not marked dead."""


class ServerReplyError(MemcachedError):
    """The node answered, but with an error reply (e.g. SERVER_ERROR object too large)."""


class LockTimeoutError(SessionStoreError):
    """A non-sticky session lock could not be acquired within lock_timeout."""

    def __init__(self, session_id: str, waited: float) -> None:
        self.session_id = session_id
        self.waited = waited
        super().__init__(
            f"session {session_id} is locked by another request (waited {waited:.1f}s)")


class SessionRateLimitError(SessionStoreError):
    """This client stores new sessions faster than session_create_rate allows: this one was
    not stored."""

    def __init__(self, client: str, retry_after: float) -> None:
        self.client = client
        self.retry_after = retry_after
        super().__init__(f"too many new sessions from {client}; retry in {retry_after:.1f}s")


class TooManySessionsError(SessionStoreError):
    """max_active_sessions are in memory and none of them can be pushed out safely (their
    latest state is not in memcached yet): no new session is made."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"too many active sessions ({limit}, max_active_sessions)")
