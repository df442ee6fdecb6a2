"""SavePlanner: what the end of a request stores, decided without I/O.

What memcached is spared: a session without data is never written (nor touched) until it has
data; an unchanged session is not written at all, only its expiry refreshed (a `touch`) once
a tenth of its interval has passed since the last write or refresh. New sessions with data are
limited per client address (session_create_rate and session_create_burst): the first write of
a session takes a token from its client's bucket, and without one the change is rolled back,
a session new in this request is dropped, nothing is stored (SessionRateLimitError, a 429).
Data-less sessions are free, so they are not counted: clients without cookies (probes,
crawlers) are never refused for them, and memory is bounded by max_active_sessions instead.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from .backup_queue import Delete, Operation, Refresh, Write
from .client_address import IPAddress
from .errors import SessionRateLimitError, SessionTooLargeError, UnstorableValueError
from .local_sessions import LocalSessions
from .nodes import NodeTracker
from .rate_limit import CreationRateLimit
from .session import Session
from .settings import SessionStoreSettings
from .stats import Stats

log = logging.getLogger("sessionstore")

_RECORD_HEADER_ALLOWANCE = 96  # "SH1 <transcoder> <created> <written> <interval>\n"
_IGNORED_PATHS_KEPT = 1024

ClientAddress = Callable[[], IPAddress | None]
"""Who asks for a new session; called only when one is about to be stored the first time."""


class IgnoredPaths:
    """request_uri_ignore_pattern, with the answers for recent paths kept."""

    def __init__(self, pattern: str) -> None:
        self._pattern = re.compile(pattern)
        self._answers: dict[str, bool] = {}

    def __call__(self, path: str) -> bool:
        ignored = self._answers.get(path)
        if ignored is None:
            ignored = self._pattern.fullmatch(path) is not None
            if len(self._answers) >= _IGNORED_PATHS_KEPT:
                self._answers.clear()  # any path can be asked for: keep the cache small
            self._answers[path] = ignored
        return ignored


class SavePlanner:
    def __init__(self, *, settings: SessionStoreSettings, stats: Stats, tracker: NodeTracker,
                 sessions: LocalSessions, busy: Callable[[str], bool],
                 is_ignored: Callable[[str], bool], refresh_after: float,
                 clock: Callable[[], float]) -> None:
        self.settings = settings
        self.stats = stats
        self.tracker = tracker
        self.sessions = sessions
        self.busy = busy
        self.is_ignored = is_ignored
        self.refresh_after = refresh_after
        self.clock = clock
        self.sticky = settings.sticky
        self.creation_limit = None if settings.session_create_rate == 0 else CreationRateLimit(
            rate=settings.session_create_rate, burst=settings.session_create_burst)

    def plan(self, session: Session, path: str, *,
             client: ClientAddress | None = None) -> Operation | None:
        """The memcached operation the end of the request needs (None: nothing to do).
        Raises SessionTooLargeError after rolling the change back, and SessionRateLimitError
        when this is the session's first write and `client` (who asked) has no token left."""
        with_backup = not self.sticky
        session.active_requests -= 1
        if session.invalidated:
            key = session.sid.random
            self.stats.sessions_invalidated += 1
            if self.sessions.get(key) is session:
                del self.sessions[key]
            if not session.persisted and not self.busy(key):
                return None  # memcached never had it, and no write of it is under way
            return Delete(session, with_backup)
        if self.is_ignored(path):
            self.stats.requests_ignored += 1
            return None
        if not session.persisted and not session and not self.busy(session.sid.random):
            # No data and never stored: it costs memcached nothing, not even a touch, until
            # the first request that gives it data.
            session.mark_unchanged()
            self.stats.backups_skipped_empty += 1
            return None
        now = self.clock()
        sid = session.sid
        if self.sticky:
            home = self.tracker.home_for(sid.node, now)
            if home != sid.node:
                session.sid = sid.with_node(home)
                self.stats.relocated(sid.node, home)
        if session.stored_attributes is None or session.sid is not session.loaded_id \
                or session.copy_missing or session.changed:
            return self._write(session, client, now, with_backup)
        session.mark_unchanged()
        self.stats.backups_skipped_unchanged += 1
        if now - session.last_refresh >= self.refresh_after:
            return Refresh(session, with_backup)
        return None

    def _write(self, session: Session, client: ClientAddress | None, now: float,
               with_backup: bool) -> Write | None:
        try:
            encoded = session.encode()
        except UnstorableValueError as exc:
            self.stats.backups_failed += 1
            log.error("session %s not stored, change rolled back: %s", session.id, exc)
            session.roll_back()
            return None
        size = len(encoded) + _RECORD_HEADER_ALLOWANCE
        if size > self.settings.max_session_size:
            self.stats.backups_too_large += 1
            session.roll_back()
            raise SessionTooLargeError(size, self.settings.max_session_size)
        if client is not None and self.creation_limit is not None \
                and not session.persisted and not self.busy(session.sid.random):
            self._take_creation_token(session, client, now)
        return Write(session, encoded, with_backup)

    def _take_creation_token(self, session: Session, client: ClientAddress,
                             now: float) -> None:
        """The session is about to be stored for the first time: it costs its client a token.
        Without one, nothing is stored: the change is rolled back and a session made in this
        request is dropped altogether (invalidated: no cookie, nothing in memory)."""
        assert self.creation_limit is not None
        address = client()
        wait = self.creation_limit.take(address, now)
        if wait <= 0:
            return
        self.stats.sessions_rate_limited += 1
        session.roll_back()
        if session.new:
            session.invalidate()
            if self.sessions.get(session.sid.random) is session:
                del self.sessions[session.sid.random]
        raise SessionRateLimitError(str(address or "an unknown address"), wait)
