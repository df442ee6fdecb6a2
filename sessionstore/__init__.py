"""sessionstore: memcached-session-manager semantics for aiohttp on asyncio.

Sessions live in the app server's memory (sticky) or only in memcached (non-sticky) and are
backed up to memcached nodes after each request; see ARCHITECTURE.md for the id format and
the failure model.
"""

from .assembly import build_manager
from .errors import (
    SessionRateLimitError,
    SessionStoreError,
    SessionTooLargeError,
    SettingsError,
    TooManySessionsError,
    UnstorableValueError,
)
from .ids import url_parameter
from .manager import SessionManager
from .middleware import (
    MANAGER_KEY,
    encode_url,
    get_session,
    new_session,
    session_middleware,
    setup,
)
from .session import Session
from .settings import SessionStoreSettings

__all__ = (
    "MANAGER_KEY",
    "Session",
    "SessionManager",
    "SessionRateLimitError",
    "SessionStoreError",
    "SessionStoreSettings",
    "SessionTooLargeError",
    "SettingsError",
    "TooManySessionsError",
    "UnstorableValueError",
    "build_manager",
    "encode_url",
    "get_session",
    "new_session",
    "session_middleware",
    "setup",
    "url_parameter",
)
