"""Node-aware memcached access and the session backup operations built on it.

`NodeStore` is the only caller of `MemcachedClient`: it skips dead nodes without waiting and
marks a node dead when an operation on it fails or times out. `SessionBackup` writes, refreshes
and deletes session records; it never raises for memcached trouble (counted and logged),
because a failed backup must never turn into a 500.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from .client import MemcachedClient
from .codec import Record, decode_record, encode_record
from .errors import MemcachedError, NodeFailureError
from .ids import SessionId, storage_key
from .nodes import NodeTracker
from .session import Session
from .settings import SessionStoreSettings
from .stats import Stats

log = logging.getLogger("sessionstore")

_T = TypeVar("_T")
_MAX_RELATIVE_EXPIRY = 30 * 24 * 3600  # memcached reads larger exptimes as a unix time
REFRESH_FRACTION = 0.1


def memcached_expiry(max_inactive_interval: float, now: float) -> int:
    """Expiry for a session copy: the interval plus the refresh slack, so the copy outlives the
    local session even though its expiry is refreshed only every REFRESH_FRACTION of it."""
    seconds = math.ceil(max_inactive_interval * (1 + REFRESH_FRACTION))
    if seconds > _MAX_RELATIVE_EXPIRY:
        return int(now) + seconds
    return max(1, seconds)


class NodeStore:
    """Memcached clients by node id, plus the dead-node bookkeeping around every call."""

    def __init__(self, *, clients: Mapping[str, MemcachedClient], tracker: NodeTracker,
                 stats: Stats, clock: Callable[[], float]) -> None:
        self.clients = clients
        self.tracker = tracker
        self.stats = stats
        self.clock = clock

    def alive(self, node: str) -> bool:
        return self.tracker.is_alive(node, self.clock())

    async def call(self, node: str, operation: str,
                   run: Callable[[MemcachedClient], Awaitable[_T]]) -> _T:
        """Run one operation on `node`; a dead node fails at once, without I/O."""
        client = self.clients.get(node)
        if client is None or not self.tracker.is_alive(node, self.clock()):
            raise NodeFailureError(node, operation, "node is marked dead")
        try:
            return await run(client)
        except NodeFailureError as exc:
            if self.tracker.mark_dead(node, self.clock()):
                self.stats.node_failures += 1
                log.warning("memcached node %s marked dead for %.1fs: %s", node,
                            self.tracker.retry_interval, exc)
            raise


class SessionBackup:
    """Writes, refreshes, loads and deletes session records (sticky and non-sticky copies)."""

    def __init__(self, *, store: NodeStore, settings: SessionStoreSettings, stats: Stats,
                 clock: Callable[[], float]) -> None:
        self.store = store
        self.settings = settings
        self.stats = stats
        self.clock = clock
        self.prefix = settings.storage_key_prefix
        self.refresh_after = settings.max_inactive_interval * REFRESH_FRACTION

    # -- loading -------------------------------------------------------------------------

    async def load(self, sid: SessionId, *, with_backup: bool) -> tuple[Record, bool] | None:
        """The stored record of `sid` (from its node, else from a `bak:` copy when
        `with_backup`) and whether it came from the primary copy; None when found nowhere."""
        started = time.perf_counter()
        record = await self._get(sid.node, storage_key(self.prefix, sid))
        from_primary = record is not None
        if record is None and with_backup:
            for node in self.store.tracker.backup_nodes_after(sid.node, self.clock()):
                record = await self._get(node, storage_key(self.prefix, sid, "backup"))
                if record is not None:
                    break
        if record is not None:
            self.stats.load_latencies.append(time.perf_counter() - started)
        return (record, from_primary) if record is not None else None

    async def _get(self, node: str, key: bytes) -> Record | None:
        if not self.store.tracker.knows(node):
            return None
        try:
            data = await self.store.call(node, "get", lambda client: client.get(key))
        except MemcachedError as exc:
            self.stats.load_failures += 1
            log.debug("load %r from %s failed: %s", key, node, exc)
            return None
        if data is None:
            return None
        try:
            return decode_record(data)
        except ValueError as exc:
            log.warning("ignoring unreadable session record %r on %s: %s", key, node, exc)
            return None

    # -- writing -------------------------------------------------------------------------

    async def write(self, session: Session, encoded: bytes, *, with_backup: bool) -> bool:
        """Store `encoded` under the session's id (and its `bak:` copy when `with_backup`);
        on success the old copies under a previous id are deleted. Never raises."""
        sid = session.sid
        now = self.clock()
        record = encode_record(self.settings.transcoder, session.created, now,
                               session.max_inactive_interval, encoded)
        expiry = memcached_expiry(session.max_inactive_interval, now)
        started = time.perf_counter()
        ok = await self._set(sid.node, storage_key(self.prefix, sid), record, expiry)
        if not ok and not self.store.alive(sid.node):
            # The node just failed: relocate now (new id suffix) rather than next request.
            home = self.store.tracker.home_for(sid.node, self.clock())
            if home != sid.node and self.store.alive(home):
                sid = session.sid = sid.with_node(home)
                self.stats.sessions_relocated += 1
                ok = await self._set(home, storage_key(self.prefix, sid), record, expiry)
        if ok and with_backup:
            for node in self.store.tracker.backup_nodes_after(sid.node, now)[:1]:
                await self._set(node, storage_key(self.prefix, sid, "backup"), record, expiry)
        if not ok:
            self.stats.backups_failed += 1
            return False
        self.stats.backup_latencies.append(time.perf_counter() - started)
        self.stats.backups_written += 1
        previous = session.loaded_id
        session.mark_stored(encoded)
        session.last_refresh = now
        if previous != sid:
            await self.delete(previous, with_backup=with_backup)
        return True

    async def refresh(self, session: Session, *, with_backup: bool) -> bool:
        """Keep the stored copy from expiring: `touch` it (sticky); rewrite it when memcached
        lost it, or in non-sticky mode (the record's write time is the refresh time)."""
        sid = session.sid
        now = self.clock()
        stored = session.stored_attributes
        if with_backup or stored is None:
            return stored is not None and await self.write(session, stored, with_backup=True)
        expiry = memcached_expiry(session.max_inactive_interval, now)
        key = storage_key(self.prefix, sid)
        try:
            touched = await self.store.call(sid.node, "touch",
                                            lambda client: client.touch(key, expiry))
        except MemcachedError as exc:
            self.stats.backups_failed += 1
            log.warning("expiry refresh of session %s failed: %s", sid.text, exc)
            return False
        if not touched:  # memcached lost it (restart, eviction): write it again, in full
            rewritten = await self.write(session, stored, with_backup=False)
            self.stats.sessions_rewritten += rewritten
            return rewritten
        session.last_refresh = now
        self.stats.backups_refreshed += 1
        return True

    async def _set(self, node: str, key: bytes, record: bytes, expiry: int) -> bool:
        try:
            return await self.store.call(node, "set",
                                         lambda client: client.set(key, record, expiry))
        except MemcachedError as exc:
            log.warning("backup %r to %s failed: %s", key, node, exc)
            return False

    async def _delete_key(self, node: str, key: bytes) -> bool:
        return await self.store.call(node, "delete", lambda client: client.delete(key))

    async def delete(self, sid: SessionId, *, with_backup: bool) -> None:
        """Best-effort removal of a session's copies (invalidation, expiry, old ids)."""
        targets = [(sid.node, storage_key(self.prefix, sid))]
        if with_backup:
            targets += [(node, storage_key(self.prefix, sid, "backup"))
                        for node in self.store.tracker.backup_nodes_after(sid.node, self.clock())]
        for node, key in targets:
            if not self.store.tracker.knows(node) or not self.store.alive(node):
                continue
            try:
                await self._delete_key(node, key)
            except MemcachedError as exc:
                log.debug("delete %r on %s failed: %s", key, node, exc)
