"""SessionManager: where a request's session comes from and what happens to it afterwards.

Sticky mode keeps sessions in this server's memory (by the random part of their id) and backs
them up to their node; an id it does not hold is loaded from the node the id names (take-over)
and re-suffixed with this server's route. Non-sticky mode keeps nothing between requests:
each one loads (primary copy, else the `bak:` copy), optionally under a lock, and writes both
copies afterwards. The decisions are synchronous; only memcached I/O is awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable, Coroutine, Mapping
from functools import partial
from typing import Any

from .backup import NodeStore, SessionBackup
from .client import MemcachedClient
from .codec import CorruptRecordError, Record, transcoder_named
from .errors import SessionTooLargeError, UnstorableValueError
from .ids import SessionId, new_session_id, parse_session_id
from .locking import HeldLock, SessionLocks, needs_lock
from .nodes import NodeStatus, NodeTracker
from .resolver import NodeDiscovery, Resolver, getaddrinfo_resolver
from .session import Session
from .settings import SessionStoreSettings
from .stats import Stats

log = logging.getLogger("sessionstore")

_RECORD_HEADER_ALLOWANCE = 96  # "SH1 <transcoder> <created> <written> <interval>\n"
_IGNORED_PATHS_KEPT = 1024


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
        self._sessions: dict[str, Session] = {}
        self._pending: set[asyncio.Task[Any]] = set()
        self._last_backup: dict[str, asyncio.Task[Any]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._discovering: asyncio.Task[None] | None = None
        self._closed = False

    # -- introspection -------------------------------------------------------------------

    @property
    def local_session_count(self) -> int:
        return len(self._sessions)

    def node_status(self) -> list[NodeStatus]:
        return self.tracker.statuses(self.clock())

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
            held = self._sessions.get(requested_id[:32])
            if held is not None and held.sid.text == requested_id \
                    and now - held.last_accessed <= held.max_inactive_interval:
                held.last_accessed = now
                return held, None
        sid = parse_session_id(requested_id) if requested_id else None
        if sid is None:
            return self.create(now), None
        if self.sticky:
            held = self._sessions.get(sid.random)
            if held is not None:
                if now - held.last_accessed > held.max_inactive_interval:
                    self._expire(held)  # its memcached copy is being deleted: not loaded
                    return self.create(now), None
                if sid.route == self.route:  # ours (the cookie may predate a relocation)
                    held.last_accessed = now
                    return held, None
                # Another server took it over meanwhile: its copy in memcached is newer.
            session = await self._load(sid, now)
            if session is None:
                if held is not None:  # the newer copy is unreachable: ours beats nothing
                    held.last_accessed = now
                    return held, None
                return self.create(now), None
            if held is not None and self._sessions.get(sid.random) is held:
                del self._sessions[sid.random]
            # A concurrent request may have loaded it meanwhile: one object per session.
            return self._sessions.setdefault(sid.random, session), None
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

    def create(self, now: float | None = None) -> Session:
        now = self.clock() if now is None else now
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

    def plan_save(self, session: Session, path: str) -> Coroutine[Any, Any, object] | None:
        """Decide, without I/O, what the end of the request stores; returns the memcached work
        (None: nothing to do). Raises SessionTooLargeError after rolling the change back."""
        with_backup = not self.sticky
        session.active_requests -= 1
        if session.invalidated:
            self.stats.sessions_invalidated += 1
            if self._sessions.get(session.sid.random) is session:
                del self._sessions[session.sid.random]
            if session.stored_attributes is None and session.loaded_id == session.sid \
                    and session.new:
                return None
            return self.backup.delete(session.loaded_id, with_backup=with_backup)
        if self.is_ignored(path):
            self.stats.requests_ignored += 1
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
            return self.backup.write(session, encoded, with_backup=with_backup)
        session.mark_unchanged()
        self.stats.backups_skipped_unchanged += 1
        if now - session.last_refresh >= self.backup.refresh_after:
            return self.backup.refresh(session, with_backup=with_backup)
        return None

    async def finish(self, session: Session, lock: HeldLock | None,
                     work: Coroutine[Any, Any, object] | None) -> None:
        """Run the end-of-request work: before returning (bounded by session_backup_timeout,
        the work itself goes on if slower) or in the background (session_backup_async)."""
        if work is None and lock is None:
            return
        task = self._spawn(session, work, lock)
        if self.settings.session_backup_async or task.done():
            return
        await _until_done(task, self.settings.session_backup_timeout)
        if not task.done():
            self.stats.backups_timed_out += 1
            log.warning("backup of session %s still running after %.3fs; answering anyway",
                        session.id, self.settings.session_backup_timeout)

    async def abandon(self, session: Session, lock: HeldLock | None) -> None:
        """The request failed (an exception that is not a response): nothing is stored."""
        session.active_requests -= 1
        if lock is not None:
            await self.locks.release(lock)

    def _spawn(self, session: Session, work: Coroutine[Any, Any, object] | None,
               lock: HeldLock | None) -> asyncio.Task[Any]:
        key = session.sid.random
        previous = self._last_backup.get(key)
        if previous is not None and previous.done():
            previous = None
        loop = asyncio.get_running_loop()
        if previous is None and lock is None and work is not None:
            task: asyncio.Task[Any] = loop.create_task(work)  # the common case: no wrapper
        else:
            task = loop.create_task(self._after(previous, work, lock))
        self._pending.add(task)
        self._last_backup[key] = task
        task.add_done_callback(partial(self._spawned_done, key, work))
        return task

    async def _after(self, previous: asyncio.Task[Any] | None,
                     work: Coroutine[Any, Any, object] | None, lock: HeldLock | None) -> None:
        try:
            if previous is not None:
                await _until_done(previous, None)  # keep one session's writes in order
            if work is not None:
                await work
        finally:
            if lock is not None:
                await self.locks.release(lock)

    def _spawned_done(self, key: str, work: Coroutine[Any, Any, object] | None,
                      finished: asyncio.Task[Any]) -> None:
        if work is not None:
            work.close()  # no-op when it ran; silences "never awaited" when cancelled early
        self._pending.discard(finished)
        if self._last_backup.get(key) is finished:
            del self._last_backup[key]
        if not finished.cancelled() and finished.exception() is not None:
            log.error("session %s backup crashed", key, exc_info=finished.exception())

    # -- expiry, lifecycle ---------------------------------------------------------------

    def _expire(self, session: Session) -> None:
        if self._sessions.get(session.sid.random) is session:
            del self._sessions[session.sid.random]
        self.stats.sessions_expired += 1
        if session.stored_attributes is not None:
            self._spawn(session, self.backup.delete(session.loaded_id, with_backup=False), None)

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
        """Probe every node once (bounded by operation_timeout) and start the expiry sweeper;
        with a dns: node list, resolve once (bounded) and start the discovery loop."""
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

    async def _sweep(self) -> None:
        interval = min(60.0, max(1.0, self.settings.max_inactive_interval / 4))
        while True:
            await asyncio.sleep(interval)
            self.expire_idle_sessions()

    async def flush(self, within: float | None = None) -> None:
        """Wait for background backups, at most `within` seconds (default
        session_backup_timeout)."""
        if self._pending:
            wait = self.settings.session_backup_timeout if within is None else within
            await asyncio.wait(set(self._pending), timeout=wait)

    async def close(self) -> None:
        """Flush pending backups (bounded), cancel what is left, close the clients."""
        if self._closed:
            return
        self._closed = True
        for background in (self._discovering, self._sweeper):
            if background is not None:
                background.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await background
        await self.flush()
        for task in list(self._pending):
            task.cancel()
        if self._pending:
            await asyncio.wait(set(self._pending))
        for client in self.clients.values():
            await client.close()

    async def __aenter__(self) -> SessionManager:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def _until_done(task: asyncio.Task[Any], within: float | None) -> None:
    """asyncio.wait((task,), timeout=within) with less machinery: one future, one timer.
    Returns when the task is done or `within` seconds have passed; never cancels it."""
    if task.done():
        return
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    wake = partial(_set_done, waiter)
    task.add_done_callback(wake)
    timer = loop.call_later(within, wake, None) if within is not None else None
    try:
        await waiter
    finally:
        if timer is not None:
            timer.cancel()
        task.remove_done_callback(wake)


def _set_done(waiter: asyncio.Future[None], _: object) -> None:
    if not waiter.done():
        waiter.set_result(None)
