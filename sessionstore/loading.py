"""SessionLoader: a stored session made a Session again, and where it goes from here.

Sticky: a session of another route is taken over (re-suffixed with this server's route,
counted by its former route); non-sticky: the route stays, and the copies' TTL says when they
were last refreshed (one meta get: no validity record to read apart). Either way a session
whose node is dead (or, sticky, a failover node of this server) is relocated: a new node in
its id, counted by node pair. A session read from its `bak:` copy because the primary copy
was missing is marked for a write at the end of the request, changed or not.
"""

from __future__ import annotations

import logging

from .backup import SessionBackup
from .codec import Record, Transcoder, transcoder_named
from .errors import CorruptRecordError
from .ids import SessionId
from .node_store import NodeStore
from .session import Session
from .settings import SessionStoreSettings
from .stats import Stats

log = logging.getLogger("sessionstore")


class SessionLoader:
    def __init__(self, *, settings: SessionStoreSettings, stats: Stats, store: NodeStore,
                 backup: SessionBackup, transcoder: Transcoder) -> None:
        self.sticky = settings.sticky
        self.route = settings.jvm_route
        self.stats = stats
        self.store = store
        self.tracker = store.tracker
        self.backup = backup
        self.transcoder = transcoder

    async def load(self, sid: SessionId, now: float) -> Session | None:
        found = await self.backup.load(sid, with_backup=not self.sticky)
        if found is None:
            return None
        session = self._session_from(sid, found.record, now)
        if session is None:
            return None
        self.stats.sessions_loaded += 1
        if self.sticky:
            if sid.route == self.route:
                target = sid
            else:
                self.stats.taken_over(sid.route)
                target = sid.with_route(self.route)
            home = self.tracker.home_for(sid.node, now)
        else:
            target = sid  # nobody owns a non-sticky session: the route stays
            home = sid.node if self.store.alive(sid.node) else self.tracker.choose_for_new(now)
            if found.refreshed_at is not None:
                # The copies were last written or touched together: their TTL says when.
                session.last_refresh = found.refreshed_at
            session.copy_missing = not found.from_primary
        if home != sid.node:
            target = target.with_node(home)
            self.stats.relocated(sid.node, home)
        session.sid = target
        return session

    def _session_from(self, sid: SessionId, record: Record, now: float) -> Session | None:
        try:
            attributes = transcoder_named(record.transcoder).decode(record.attributes_bytes)
        except CorruptRecordError as exc:
            log.warning("ignoring unreadable session %s: %s", sid.text, exc)
            return None
        same_codec = record.transcoder == self.transcoder.name
        session = Session(sid=sid, transcoder=self.transcoder, created=record.created,
                          last_accessed=now, max_inactive_interval=record.max_inactive_interval,
                          new=False, attributes=attributes,
                          stored_attributes=record.attributes_bytes if same_codec else None)
        session.last_refresh = record.written
        return session

