"""sessionstore: memcached-session-manager semantics for aiohttp on asyncio.

Sessions live in the app server's memory (sticky) or only in memcached (non-sticky) and are
backed up to memcached nodes after each request; see ARCHITECTURE.md for the id format and
the failure model.
"""

from .errors import SessionStoreError, SessionTooLargeError, SettingsError, UnstorableValueError
from .manager import SessionManager
from .middleware import MANAGER_KEY, encode_url, get_session, setup
from .session import Session
from .settings import SessionStoreSettings

__all__ = (
    "MANAGER_KEY",
    "Session",
    "SessionManager",
    "SessionStoreError",
    "SessionStoreSettings",
    "SessionTooLargeError",
    "SettingsError",
    "UnstorableValueError",
    "encode_url",
    "get_session",
    "setup",
)
