"""SessionManager: where a request's session comes from and what happens to it afterwards.

Sticky mode keeps sessions in this server's memory (by the random part of their id, at most
max_active_sessions: the least recently used are pushed out and load back from memcached)
and backs them up to their node; an id it does not hold is loaded from the node the id names
(take-over) and re-suffixed with this server's route. Non-sticky mode keeps nothing between
requests: each one loads (primary copy, else the `bak:` copy), optionally under a lock, and
writes both copies afterwards. The decisions are synchronous; only memcached I/O is awaited.

What memcached is spared: a session without data is never written (nor touched) until it has
data. New sessions with data are limited per client address (session_create_rate and
session_create_burst): the first write of a session takes a token from its client's bucket,
and without one the change is rolled back, a session new in this request is dropped, nothing
is stored (SessionRateLimitError, a 429). Data-less sessions are free, so they are not
counted: clients without cookies (probes, crawlers) are never refused for them, and memory
is bounded by max_active_sessions instead.

Durable acknowledgement (session_backup_async = false): `finish` answers True only when the
request's change is confirmed in memcached, by a write that started after the change was made
(writes of one session are coalesced, see backup_queue.py). When it is not confirmed within
session_backup_timeout, or the write failed, `finish` answers False and the middleware sends
503 with Retry-After, as a backend that cannot commit would; the write itself goes on, so the
change may still land (retrying is safe). One exception, ARCHITECTURE's failure model: with
sticky sessions and every memcached node dead, the session lives on in memory and the answer
is the handler's (/health says "degraded"). With session_backup_async = true answers never
wait, and a 2xx promises nothing about memcached.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from .backup import NodeStore, SessionBackup
from .backup_queue import BackupQueue, Delete, Operation, Refresh, Write
from .client import MemcachedClient
from .client_address import IPAddress, TrustedProxies
from .codec import CorruptRecordError, Record, transcoder_named
from .errors import (
    SessionRateLimitError,
    SessionTooLargeError,
    TooManySessionsError,
    UnstorableValueError,
)
from .evictions import EvictionWatch, NodeEvictions, recheck_sessions
from .ids import SessionId, new_session_id, parse_session_id
from .local_sessions import LocalSessions
from .locking import HeldLock, SessionLocks, needs_lock
from .nodes import NodeStatus, NodeTracker
from .rate_limit import CreationRateLimit
from .resolver import NodeDiscovery, Resolver, getaddrinfo_resolver
from .session import Session
from .settings import SessionStoreSettings
from .stats import Stats
from .waiting import until_done

log = logging.getLogger("sessionstore")

_RECORD_HEADER_ALLOWANCE = 96  # "SH1 <transcoder> <created> <written> <interval>\n"
_IGNORED_PATHS_KEPT = 1024
# Sessions re-checked at once after evictions: few, so that requests still find connections
# in the pool (each client has 4) within operation_timeout.
_RECHECK_CONCURRENCY = 2

# The order of use is kept to this resolution: a session used again within it is not moved
# (a burst of requests on one session pays for one reordering).
_REORDER_AFTER = 1.0

ClientAddress = Callable[[], IPAddress | None]
"""Who asks for a new session; called only when one is about to be stored the first time."""


class SessionManager:
    """Owns the node tracker, memcached clients, local sessions, background backups, stats.

    With `memcached_nodes = "dns:NAME:PORT"` it also owns the discovery loop; `resolver`
    (name -> addresses) replaces the event loop's getaddrinfo, e.g. in tests.
    """

    def __init__(self, *, settings: SessionStoreSettings,
                 clients: Mapping[str, MemcachedClient] | None = None,
                 clock: Callable[[], float] = time.time,
                 resolver: Resolver | None = None) -> None:
        self.settings = settings
        self.clock = clock
        self.stats = Stats()
        self.sticky = settings.sticky
        self.route = settings.jvm_route
        nodes = settings.nodes
        dns = settings.discovery
        if resolver is not None and dns is None:
            raise ValueError("resolver= needs memcached_nodes = \"dns:NAME:PORT\"")
        self.tracker = NodeTracker(nodes, settings.failover, settings.node_retry_interval,
                                   discovered=dns is not None)
        self.clients: dict[str, MemcachedClient] = dict(clients) if clients is not None else {
            node.id: MemcachedClient(node=node.id, host=node.host, port=node.port,
                                     operation_timeout=settings.operation_timeout)
            for node in nodes
        }
        self.store = NodeStore(clients=self.clients, tracker=self.tracker, stats=self.stats,
                               clock=clock)
        self.backup = SessionBackup(store=self.store, settings=settings, stats=self.stats,
                                    clock=clock)
        self.locks = SessionLocks(store=self.store, prefix=settings.storage_key_prefix,
                                  lock_timeout=settings.lock_timeout, stats=self.stats,
                                  clock=clock)
        self.discovery = None if dns is None else NodeDiscovery(
            dns=dns, tracker=self.tracker, clients=self.clients, stats=self.stats,
            operation_timeout=settings.operation_timeout, interval=settings.resolver_valid,
            resolver=resolver or getaddrinfo_resolver)
        self.transcoder = transcoder_named(settings.transcoder)
        self._ignore = re.compile(settings.request_uri_ignore_pattern)
        self._ignored_paths: dict[str, bool] = {}  # is_ignored's answers for recent paths
        self._lock_kind, self._lock_pattern = settings.locking
        self.locks_by_uri = not self.sticky and self._lock_kind == "uriPattern"
        self._sessions = LocalSessions(
            limit=settings.max_sessions_in_memory if self.sticky else None,
            can_push_out=self._can_push_out, stats=self.stats)
        self.queue = BackupQueue(backup=self.backup, stats=self.stats)
        self.creation_limit = None if settings.session_create_rate == 0 else CreationRateLimit(
            rate=settings.session_create_rate, burst=settings.session_create_burst)
        self.trusted_proxies = TrustedProxies(settings.trusted_networks)
        self.evictions = EvictionWatch(store=self.store, stats=self.stats,
                                       interval=settings.node_retry_interval,
                                       on_growth=self._recheck_node)
        self._pending: set[asyncio.Task[Any]] = set()  # lock releases after their backup
        self._sweeper: asyncio.Task[None] | None = None
        self._discovering: asyncio.Task[None] | None = None
        self._watching: asyncio.Task[None] | None = None
        self._closed = False

    # -- introspection -------------------------------------------------------------------

    @property
    def local_session_count(self) -> int:
        return len(self._sessions)

    def node_status(self) -> list[NodeStatus]:
        return self.tracker.statuses(self.clock())

    def node_evictions(self, node: str) -> NodeEvictions:
        """The node's memcached `evictions` as last read, and whether it is evicting now."""
        return self.evictions.status(node)

    def is_ignored(self, path: str) -> bool:
        ignored = self._ignored_paths.get(path)
        if ignored is None:
            ignored = self._ignore.fullmatch(path) is not None
            if len(self._ignored_paths) >= _IGNORED_PATHS_KEPT:
                self._ignored_paths.clear()  # any path can be asked for: keep the cache small
            self._ignored_paths[path] = ignored
        return ignored

    # -- opening a session -------------------------------------------------------------

    async def open(self, requested_id: str | None, *, method: str = "GET",
                   path_qs: str = "/") -> tuple[Session, HeldLock | None]:
        """The session for a request that sent `requested_id` (cookie or URL), and the lock
        held for it (non-sticky with locking). Invalid or unknown ids get a fresh session."""
        now = self.clock()
        if self.sticky and requested_id:
            # Hot path: the exact id of a session held here needs no parsing (it was valid
            # when issued); anything else is parsed and validated before any lookup.
            key = requested_id[:32]
            held = self._sessions.get(key)
            if held is not None and held.sid.text == requested_id:
                idle = now - held.last_accessed
                if idle <= held.max_inactive_interval:
                    held.last_accessed = now
                    if idle > _REORDER_AFTER:
                        self._sessions.move_to_end(key)  # most recently used: pushed out last
                    return held, None
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
            session = await self._load(sid, now)
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
            session = await self._load(sid, now)
        except BaseException:
            if lock is not None:
                await self.locks.release(lock)
            raise
        if session is None:
            if lock is not None:
                await self.locks.release(lock)
            return self.create(now), None
        return session, lock

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

    async def _load(self, sid: SessionId, now: float) -> Session | None:
        found = await self.backup.load(sid, with_backup=not self.sticky)
        if found is None:
            return None
        record, _ = found
        session = self._session_from(sid, record, now)
        if session is None:
            return None
        self.stats.sessions_loaded += 1
        if self.sticky:
            target = sid if sid.route == self.route else sid.with_route(self.route)
            home = self.tracker.home_for(sid.node, now)
        else:
            target = sid  # nobody owns a non-sticky session: the route stays
            home = sid.node if self.store.alive(sid.node) else self.tracker.choose_for_new(now)
        if home != sid.node:
            target = target.with_node(home)
            self.stats.sessions_relocated += 1
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

    # -- after the request -------------------------------------------------------------

    def plan_save(self, session: Session, path: str, *,
                  client: ClientAddress | None = None) -> Operation | None:
        """Decide, without I/O, what the end of the request stores; returns the memcached
        operation (None: nothing to do). Raises SessionTooLargeError after rolling the change
        back, and SessionRateLimitError when this is the session's first write and `client`
        (who asked) has no token left (see the module docstring)."""
        with_backup = not self.sticky
        session.active_requests -= 1
        if session.invalidated:
            key = session.sid.random
            self.stats.sessions_invalidated += 1
            if self._sessions.get(key) is session:
                del self._sessions[key]
            if not session.persisted and not self.queue.busy(key):
                return None  # memcached never had it, and no write of it is under way
            return Delete(session, with_backup)
        if self.is_ignored(path):
            self.stats.requests_ignored += 1
            return None
        if not session.persisted and not session and not self.queue.busy(session.sid.random):
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
                self.stats.sessions_relocated += 1
        if session.stored_attributes is None or session.sid is not session.loaded_id \
                or session.changed:
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
                    and not session.persisted and not self.queue.busy(session.sid.random):
                self._take_creation_token(session, client, now)
            return Write(session, encoded, with_backup)
        session.mark_unchanged()
        self.stats.backups_skipped_unchanged += 1
        if now - session.last_refresh >= self.backup.refresh_after:
            return Refresh(session, with_backup)
        return None

    async def finish(self, session: Session, lock: HeldLock | None,
                     operation: Operation | None) -> bool:
        """Run the end-of-request work: before returning (bounded by session_backup_timeout,
        the work itself goes on if slower) or in the background (session_backup_async).

        Returns False when the answer must not claim success: the request's change was not
        confirmed in memcached in time (see the module docstring)."""
        if operation is None and lock is None:
            return True
        ack = self.queue.submit(session.sid.random, operation) if operation is not None \
            else None
        awaited: asyncio.Future[Any] | None = ack
        if lock is not None:
            awaited = self._release_after(ack, lock)
        if self.settings.session_backup_async or awaited is None:
            return True
        timeout = self.settings.session_backup_timeout
        await until_done(awaited, timeout)
        if ack is None or not isinstance(operation, Write):  # no change to confirm
            if not awaited.done():
                self.stats.backups_timed_out += 1
                log.warning("backup of session %s still running after %.3fs; answering anyway",
                            session.id, timeout)
            return True
        if not ack.done():
            self.stats.backups_timed_out += 1
            self.stats.backups_unconfirmed += 1
            log.warning("backup of session %s not confirmed within %.3fs; answering 503",
                        session.id, timeout)
            return False
        if ack.result():
            return True
        if self.sticky and not self.tracker.any_alive(self.clock()):
            return True  # every node is dead: the session lives on in memory ("degraded")
        self.stats.backups_unconfirmed += 1
        return False

    async def abandon(self, session: Session, lock: HeldLock | None) -> None:
        """The request failed (an exception that is not a response): nothing is stored."""
        session.active_requests -= 1
        if lock is not None:
            await self.locks.release(lock)

    def _release_after(self, ack: asyncio.Future[bool] | None,
                       lock: HeldLock) -> asyncio.Task[None]:
        """Release a non-sticky lock once the request's backup is done (ok or not), so the
        next holder loads what this request stored."""
        async def release() -> None:
            if ack is not None:
                await ack
            await self.locks.release(lock)

        task = asyncio.get_running_loop().create_task(release())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return task

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
            if self._sessions.get(session.sid.random) is session:
                del self._sessions[session.sid.random]
        raise SessionRateLimitError(str(address or "an unknown address"), wait)

    def _can_push_out(self, session: Session) -> bool:
        """Memory may forget it: no request has it, and memcached holds its latest state."""
        return session.active_requests == 0 and session.saved \
            and not self.queue.busy(session.sid.random)

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
        if session.persisted or self.queue.busy(key):
            self.queue.submit(key, Delete(session, with_backup=False))

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
        """Probe every node once (bounded by operation_timeout), start the expiry sweeper and
        the evictions watch; with a dns: node list, resolve once (bounded) and start the
        discovery loop."""
        async def probe(node: str) -> None:
            with contextlib.suppress(Exception):
                await self.store.call(node, "version", lambda client: client.version())

        await asyncio.gather(*(probe(node) for node in self.clients))
        loop = asyncio.get_running_loop()
        if self.discovery is not None and self._discovering is None:
            await self.discovery.refresh()
            self._discovering = loop.create_task(self.discovery.run())
        if self.sticky and self._sweeper is None:
            self._sweeper = loop.create_task(self._sweep())
        if self._watching is None:
            self._watching = loop.create_task(self.evictions.run())

    async def _sweep(self) -> None:
        interval = min(60.0, max(1.0, self.settings.max_inactive_interval / 4))
        while True:
            await asyncio.sleep(interval)
            self.expire_idle_sessions()

    async def flush(self, within: float | None = None) -> None:
        """Wait for background backups (queued ones too), at most `within` seconds (default
        session_backup_timeout)."""
        wait = self.settings.session_backup_timeout if within is None else within
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while running := self.queue.running() | self._pending:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            await asyncio.wait(running, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)

    async def close(self) -> None:
        """Flush pending backups (bounded), cancel what is left, close the clients."""
        if self._closed:
            return
        self._closed = True
        for background in (self._discovering, self._sweeper, self._watching):
            if background is not None:
                background.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await background
        await self.flush()
        self.queue.cancel()
        for task in list(self._pending):
            task.cancel()
        while running := self.queue.running() | self._pending:
            await asyncio.wait(running)
        for client in self.clients.values():
            await client.close()

    async def __aenter__(self) -> SessionManager:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

