"""The session backup operations: load, write, refresh and delete session records.

Everything goes through NodeStore (the memcached choke point). `SessionBackup` never raises
for memcached trouble (counted and logged), because a failed backup must never turn into a
500.

Round trips, as MSM keeps them down (data written only when it changed, expiry refreshed
apart from the data):
- a load is one meta get (`mg <key> v t k`): the record and its remaining time to live. The
  TTL says how long ago the copy was last written or touched, which is what a validity
  record would say, without a second key to keep in step;
- a non-sticky write sends the primary and the `bak:` copy at once (concurrently), so it
  costs one round trip of latency, not two in a row;
- a refresh is a `touch` of the copies (both at once for non-sticky), never a rewrite; a copy
  memcached lost (restart, eviction) is written again in full.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from .codec import Record, decode_record, encode_record
from .errors import MemcachedError
from .ids import SessionId, storage_key
from .node_store import NodeStore
from .session import Session
from .settings import SessionStoreSettings
from .stats import Stats

log = logging.getLogger("sessionstore")

_MAX_RELATIVE_EXPIRY = 30 * 24 * 3600  # memcached reads larger exptimes as a unix time
REFRESH_FRACTION = 0.1
# memcached's clock ticks in whole seconds: a copy's age read from its TTL may be up to a
# second short, so it is taken as that much older (refreshing early is safe, late is not).
_TTL_RESOLUTION = 1.0


def expiry_seconds(max_inactive_interval: float) -> int:
    """How long a copy lives after its last write or touch: the interval plus the refresh
    slack, so the copy outlives the session although its expiry is refreshed only every
    REFRESH_FRACTION of it."""
    return max(1, math.ceil(max_inactive_interval * (1 + REFRESH_FRACTION)))


def memcached_expiry(max_inactive_interval: float, now: float) -> int:
    """The exptime to send for a session copy (absolute beyond memcached's 30 days)."""
    seconds = expiry_seconds(max_inactive_interval)
    return int(now) + seconds if seconds > _MAX_RELATIVE_EXPIRY else seconds


@dataclass(slots=True)  # not frozen: one per load
class Loaded:
    """A record as found in memcached: from the primary copy or a `bak:` copy, and when the
    copy was last written or touched (from its TTL; None when memcached did not say)."""

    record: Record
    from_primary: bool
    refreshed_at: float | None


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

    async def load(self, sid: SessionId, *, with_backup: bool) -> Loaded | None:
        """The stored record of `sid` (from its node, else from a `bak:` copy when
        `with_backup`); None when found nowhere."""
        started = time.perf_counter()
        found = await self._get(sid.node, storage_key(self.prefix, sid))
        from_primary = found is not None
        if found is None and with_backup:
            for node in self.store.tracker.backup_nodes_after(sid.node, self.clock()):
                found = await self._get(node, storage_key(self.prefix, sid, "backup"))
                if found is not None:
                    break
        if found is None:
            return None
        self.stats.load_latencies.append(time.perf_counter() - started)
        record, ttl = found
        refreshed_at = None
        if ttl > 0 and record.max_inactive_interval * (1 + REFRESH_FRACTION) \
                <= _MAX_RELATIVE_EXPIRY:
            age = expiry_seconds(record.max_inactive_interval) - ttl + _TTL_RESOLUTION
            refreshed_at = self.clock() - max(0.0, age)
        return Loaded(record, from_primary, refreshed_at)

    async def _get(self, node: str, key: bytes) -> tuple[Record, int] | None:
        if not self.store.tracker.knows(node):
            return None
        try:
            found = await self.store.call(node, "get", lambda client: client.get_with_ttl(key))
        except MemcachedError as exc:
            self.stats.load_failures += 1
            log.debug("load %r from %s failed: %s", key, node, exc)
            return None
        if found is None:
            return None
        try:
            return decode_record(found[0]), found[1]
        except ValueError as exc:
            log.warning("ignoring unreadable session record %r on %s: %s", key, node, exc)
            return None

    # -- writing -------------------------------------------------------------------------

    async def write(self, session: Session, encoded: bytes, *, with_backup: bool) -> bool:
        """Store `encoded` under the session's id (and its `bak:` copy when `with_backup`,
        sent at the same time); on success the old copies under a previous id are deleted.
        Never raises."""
        sid = session.sid
        now = self.clock()
        record = encode_record(self.settings.transcoder, session.created, now,
                               session.max_inactive_interval, encoded)
        expiry = memcached_expiry(session.max_inactive_interval, now)
        started = time.perf_counter()
        backup = self._backup_write(sid, record, expiry, now) if with_backup else None
        ok = await self._set(sid.node, storage_key(self.prefix, sid), record, expiry)
        if not ok and not self.store.alive(sid.node):
            # The node just failed: relocate now (new id suffix) rather than next request.
            home = self.store.tracker.home_for(sid.node, self.clock())
            if home != sid.node and self.store.alive(home):
                self.stats.relocated(sid.node, home)
                sid = session.sid = sid.with_node(home)
                if backup is not None:
                    await backup  # under the old id: deleted with it below
                    backup = self._backup_write(sid, record, expiry, now)
                ok = await self._set(home, storage_key(self.prefix, sid), record, expiry)
        if backup is not None:
            await backup
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

    def _backup_write(self, sid: SessionId, record: bytes, expiry: int,
                      now: float) -> asyncio.Task[bool] | None:
        """The `bak:` copy on the next alive node after the session's, written concurrently
        with the primary copy (a task); None when no other node is alive."""
        nodes = self.store.tracker.backup_nodes_after(sid.node, now)
        if not nodes:
            return None
        key = storage_key(self.prefix, sid, "backup")
        return asyncio.get_running_loop().create_task(self._set(nodes[0], key, record, expiry))

    async def refresh(self, session: Session, *, with_backup: bool) -> bool:
        """Keep the stored copies from expiring with `touch` (both at once with a `bak:`
        copy); a copy memcached lost is written again, in full."""
        sid = session.sid
        now = self.clock()
        stored = session.stored_attributes
        if stored is None:
            return False
        expiry = memcached_expiry(session.max_inactive_interval, now)
        backup: asyncio.Task[bool | None] | None = None
        backup_node = None
        if with_backup:
            nodes = self.store.tracker.backup_nodes_after(sid.node, now)
            if nodes:
                backup_node = nodes[0]
                backup = asyncio.get_running_loop().create_task(
                    self._touch(backup_node, storage_key(self.prefix, sid, "backup"), expiry))
        touched = await self._touch(sid.node, storage_key(self.prefix, sid), expiry)
        backup_touched = await backup if backup is not None else True
        if touched is None:
            self.stats.backups_failed += 1
            return False
        if not touched:  # memcached lost it (restart, eviction): write it again, in full
            rewritten = await self.write(session, stored, with_backup=with_backup)
            self.stats.sessions_rewritten += rewritten
            return rewritten
        if backup_touched is False and backup_node is not None:
            # The `bak:` copy alone was lost: write it again, the primary is fine.
            record = encode_record(self.settings.transcoder, session.created, now,
                                   session.max_inactive_interval, stored)
            if await self._set(backup_node, storage_key(self.prefix, sid, "backup"), record,
                               expiry):
                self.stats.sessions_rewritten += 1
        session.last_refresh = now
        self.stats.backups_refreshed += 1
        return True

    async def _touch(self, node: str, key: bytes, expiry: int) -> bool | None:
        """True: touched; False: the copy is gone; None: the node failed (logged)."""
        try:
            return await self.store.call(node, "touch",
                                         lambda client: client.touch(key, expiry))
        except MemcachedError as exc:
            self.stats.backup_failed_on(node)
            log.warning("expiry refresh of %r on %s failed: %s", key, node, exc)
            return None

    async def _set(self, node: str, key: bytes, record: bytes, expiry: int) -> bool:
        try:
            return await self.store.call(node, "set",
                                         lambda client: client.set(key, record, expiry))
        except MemcachedError as exc:
            self.stats.backup_failed_on(node)
            log.warning("backup %r to %s failed: %s", key, node, exc)
            return False

    async def delete(self, sid: SessionId, *, with_backup: bool) -> None:
        """Best-effort removal of a session's copies (invalidation, expiry, old ids)."""
        targets = [(sid.node, storage_key(self.prefix, sid))]
        if with_backup:
            targets += [(node, storage_key(self.prefix, sid, "backup"))
                        for node in self.store.tracker.backup_nodes_after(sid.node, self.clock())]
        for node, key in targets:
            if not self.store.tracker.knows(node) or not self.store.alive(node):
                continue
            await self._delete_key(node, key)

    async def _delete_key(self, node: str, key: bytes) -> None:
        try:
            await self.store.call(node, "delete", lambda client: client.delete(key))
        except MemcachedError as exc:
            log.debug("delete %r on %s failed: %s", key, node, exc)
