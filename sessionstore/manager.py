"""SessionManager: where a request's session comes from and what happens to it afterwards.

Sticky mode keeps sessions in this server's memory (by the random part of their id, at most
max_active_sessions: the least recently used are pushed out and load back from memcached)
and backs them up to their node; an id it does not hold is loaded from the node the id names
(take-over) and re-suffixed with this server's route. Non-sticky mode keeps nothing between
requests: each one loads (primary copy, else the `bak:` copy), optionally under a lock, and
writes both copies afterwards when the session changed (at once, see backup.py), or touches
them when their expiry is due. The decisions are synchronous; only memcached I/O is awaited.

What is stored, and when, is planning.py's; how the end-of-request work runs and what a
response may promise about it (durable acknowledgement) is scheduler.py's. The manager is
handed its parts ready (assembly.build_manager makes them from settings).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .backup import SessionBackup
from .backup_queue import BackupQueue, Delete, Operation
from .client import MemcachedClient
from .client_address import TrustedProxies
from .codec import transcoder_named
from .errors import TooManySessionsError
from .evictions import EvictionWatch, NodeEvictions, recheck_sessions
from .ids import new_session_id, parse_session_id
from .lifecycle import BackgroundTasks
from .loading import SessionLoader
from .local_sessions import LocalSessions
from .locking import HeldLock, SessionLocks, needs_lock
from .node_store import NodeStore
from .nodes import NodeStatus
from .planning import ClientAddress, IgnoredPaths, SavePlanner
from .resolver import NodeDiscovery
from .scheduler import BackupScheduler
from .session import Session
from .settings import SessionStoreSettings
from .stats import Stats

log = logging.getLogger("sessionstore")

# Sessions re-checked at once after evictions: few, so that requests still find connections
# in the pool (each client has 4) within operation_timeout.
_RECHECK_CONCURRENCY = 2

# The order of use is kept to this resolution: a session used again within it is not moved
# (a burst of requests on one session pays for one reordering).
_REORDER_AFTER = 1.0

__all__ = ("ClientAddress", "SessionManager")


class SessionManager:
    """Local sessions, where each request's session comes from, and the lifecycle of the
    background tasks (expiry sweeper, evictions watch, discovery). Owns what it is handed:
    `close()` closes the memcached clients."""

    def __init__(self, *, settings: SessionStoreSettings, stats: Stats, store: NodeStore,
                 backup: SessionBackup, locks: SessionLocks, scheduler: BackupScheduler,
                 discovery: NodeDiscovery | None, clock: Callable[[], float]) -> None:
        self.settings = settings
        self.clock = clock
        self.stats = stats
        self.sticky = settings.sticky
        self.route = settings.jvm_route
        self.store = store
        self.tracker = store.tracker
        self.backup = backup
        self.locks = locks
        self.scheduler = scheduler
        self.queue: BackupQueue = scheduler.queue
        self.discovery = discovery
        self.transcoder = transcoder_named(settings.transcoder)
        self.loader = SessionLoader(settings=settings, stats=stats, store=store, backup=backup,
                                    transcoder=self.transcoder)
        self.is_ignored = IgnoredPaths(settings.request_uri_ignore_pattern)
        self._lock_kind, self._lock_pattern = settings.locking
        self.locks_by_uri = not self.sticky and self._lock_kind == "uriPattern"
        self._sessions = LocalSessions(
            limit=settings.max_sessions_in_memory if self.sticky else None,
            can_push_out=self._can_push_out, stats=stats)
        self.planner = SavePlanner(settings=settings, stats=stats, tracker=self.tracker,
                                   sessions=self._sessions, busy=scheduler.busy,
                                   is_ignored=self.is_ignored,
                                   refresh_after=backup.refresh_after, clock=clock)
        self.trusted_proxies = TrustedProxies(settings.trusted_networks)
        self.evictions = EvictionWatch(store=store, stats=stats,
                                       interval=settings.node_retry_interval,
                                       on_growth=self._recheck_node)
        self.background = BackgroundTasks(
            store=store, evictions=self.evictions, discovery=discovery,
            sweep=self.expire_idle_sessions if self.sticky else None,
            sweep_interval=min(60.0, max(1.0, settings.max_inactive_interval / 4)))
        self._closed = False

    # -- introspection -------------------------------------------------------------------

    @property
    def clients(self) -> dict[str, MemcachedClient]:
        """The memcached clients by node id (discovery adds and removes some)."""
        return self.store.clients  # type: ignore[return-value]

    @property
    def local_session_count(self) -> int:
        return len(self._sessions)

    def node_status(self) -> list[NodeStatus]:
        return self.tracker.statuses(self.clock())

    def node_evictions(self, node: str) -> NodeEvictions:
        """The node's memcached `evictions` as last read, and whether it is evicting now."""
        return self.evictions.status(node)

    # -- opening a session -------------------------------------------------------------

    async def open(self, requested_id: str | None, *, method: str = "GET",
                   path_qs: str = "/") -> tuple[Session, HeldLock | None]:
        """The session for a request that sent `requested_id` (cookie or URL), and the lock
        held for it (non-sticky with locking). Invalid or unknown ids get a fresh session."""
        if requested_id:
            held = self.held(requested_id)
            if held is not None:
                return held, None
        now = self.clock()
        sid = parse_session_id(requested_id) if requested_id else None
        if sid is None:
            return self.create(now), None
        if self.sticky:
            held = self._sessions.get(sid.random)
            if held is None and self._sessions.retired(sid.random):
                return self.create(now), None  # its id was rotated here: never loaded again
            if held is not None:
                if now - held.last_accessed > held.max_inactive_interval:
                    self._expire(held)  # its memcached copy is being deleted: not loaded
                    return self.create(now), None
                if sid.route == self.route:  # ours (the cookie may predate a relocation)
                    return self._used(held, now), None
                # Another server took it over meanwhile: its copy in memcached is newer.
            session = await self.loader.load(sid, now)
            if session is None:
                if held is not None:  # the newer copy is unreachable: ours beats nothing
                    return self._used(held, now), None
                return self.create(now), None
            if held is not None and self._sessions.get(sid.random) is held:
                del self._sessions[sid.random]
            # A concurrent request may have loaded it meanwhile: one object per session.
            loaded = self._sessions.get(sid.random)
            if loaded is not None:
                return self._used(loaded, now), None
            # It exists: served even when nothing can be pushed out (the cap then bends by
            # the sessions loaded meanwhile; they can go as soon as their write is done).
            self._sessions.make_room()
            self._sessions[sid.random] = session
            return session, None
        if not self.tracker.knows(sid.node) and not self.tracker.discovered:
            # A static list names every node there is. A discovered one may not list the id's
            # node (drained, or not yet discovered here): its `bak:` copy is still looked up.
            return self.create(now), None
        lock = None
        if needs_lock(self._lock_kind, self._lock_pattern, method, path_qs):
            lock_node = sid.node
            if not self.store.alive(lock_node):
                after = self.tracker.backup_nodes_after(sid.node, now)
                lock_node = after[0] if after else sid.node
            lock = await self.locks.acquire(sid, lock_node)
        try:
            session = await self.loader.load(sid, now)
        except BaseException:
            if lock is not None:
                await self.locks.release(lock)
            raise
        if session is None:
            if lock is not None:
                await self.locks.release(lock)
            return self.create(now), None
        return session, lock

    def held(self, requested_id: str) -> Session | None:
        """The hot path of `open`, without I/O: in sticky mode, the session held here under
        exactly `requested_id` and still within its interval, now marked used; else None.
        The exact id of a session held here needs no parsing (it was valid when issued);
        anything else is left to `open`, which parses and validates it first."""
        if not self.sticky:
            return None
        key = requested_id[:32]
        held = self._sessions.get(key)
        if held is None or held.sid.text != requested_id:
            return None
        now = self.clock()
        idle = now - held.last_accessed
        if idle > held.max_inactive_interval:
            return None
        held.last_accessed = now
        if idle > _REORDER_AFTER:
            self._sessions.move_to_end(key)  # most recently used: pushed out last
        return held

    def _used(self, session: Session, now: float) -> Session:
        session.last_accessed = now
        self._sessions.move_to_end(session.sid.random)
        return session

    def create(self, now: float | None = None) -> Session:
        """A new session; in sticky mode it needs room in memory (TooManySessionsError, and
        no session, when nothing can be pushed out)."""
        now = self.clock() if now is None else now
        if self.sticky and not self._sessions.make_room():
            self.stats.sessions_refused += 1
            raise TooManySessionsError(self.settings.max_active_sessions)
        sid = new_session_id(self.tracker.choose_for_new(now), self.route)
        session = Session(sid=sid, transcoder=self.transcoder, created=now, last_accessed=now,
                          max_inactive_interval=self.settings.max_inactive_interval, new=True)
        self.stats.sessions_created += 1
        if self.sticky:
            self._sessions[sid.random] = session
        return session

    # -- after the request -------------------------------------------------------------

    def plan_save(self, session: Session, path: str, *,
                  client: ClientAddress | None = None) -> Operation | None:
        """Decide, without I/O, what the end of the request stores (planning.py)."""
        return self.planner.plan(session, path, client=client)

    async def finish(self, session: Session, lock: HeldLock | None,
                     operation: Operation | None) -> bool:
        """Run the end-of-request work; False when the answer must not claim success
        (scheduler.py)."""
        return await self.scheduler.finish(session, lock, operation)

    async def abandon(self, session: Session, lock: HeldLock | None) -> None:
        """The request failed (an exception that is not a response): nothing is stored."""
        session.active_requests -= 1
        if lock is not None:
            await self.locks.release(lock)

    def _can_push_out(self, session: Session) -> bool:
        """Memory may forget it: no request has it, and memcached holds its latest state."""
        return session.active_requests == 0 and session.saved \
            and not self.scheduler.busy(session.sid.random)

    # -- evictions -------------------------------------------------------------------------

    async def _recheck_node(self, node: str) -> None:
        """`node` evicted items: check the sessions held here that are backed up there."""
        if not self.sticky:
            return  # nothing is held here; the `bak:` copy covers non-sticky sessions
        rewritten = self.stats.sessions_rewritten
        checked = await recheck_sessions(node, self._sessions, queue=self.queue,
                                         alive=self.store.alive,
                                         concurrency=_RECHECK_CONCURRENCY)
        log.warning("re-checked %d sessions backed up to %s after evictions: %d written again",
                    checked, node, self.stats.sessions_rewritten - rewritten)

    # -- expiry, lifecycle ---------------------------------------------------------------

    def _expire(self, session: Session) -> None:
        key = session.sid.random
        if self._sessions.get(key) is session:
            del self._sessions[key]
        self.stats.sessions_expired += 1
        if session.persisted or self.scheduler.busy(key):
            self.scheduler.submit(key, Delete(session, with_backup=False))

    def expire_idle_sessions(self) -> int:
        """Drop local sessions idle longer than their max_inactive_interval (and their
        memcached copies); returns how many."""
        now = self.clock()
        idle = [s for s in self._sessions.values()
                if now - s.last_accessed > s.max_inactive_interval]
        for session in idle:
            self._expire(session)
        return len(idle)

    async def start(self) -> None:
        """Probe the nodes and start the background loops (lifecycle.py)."""
        await self.background.start()

    async def flush(self, within: float | None = None) -> None:
        """Wait for background backups (queued ones too), at most `within` seconds (default
        session_backup_timeout)."""
        await self.scheduler.flush(self.settings.session_backup_timeout if within is None
                                   else within)

    async def close(self) -> None:
        """Flush pending backups (bounded), cancel what is left, close the clients."""
        if self._closed:
            return
        self._closed = True
        await self.background.stop()
        await self.flush()
        await self.scheduler.cancel()
        await self.store.close()

    async def __aenter__(self) -> SessionManager:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
