"""memcached evictions: a node throwing live items away is throwing session backups away.

Every node_retry_interval each node's `stats` are read, through NodeStore like every other
operation (bounded by operation_timeout; a dead node is skipped, a failing one marked dead).
When a node's `evictions` count grows, one warning is logged (per change, not per poll), the
growth is counted (`memcached_evictions`), the node shows `"evicting": true` in /health for
EVICTING_WINDOW seconds, and `on_growth(node)` runs: the manager re-checks the sessions it
holds that are backed up there and writes again those memcached lost.

The same poll keeps what the node holds (`curr_items`, `bytes`, `limit_maxbytes`), which
/health and /metrics show per node: how full a node is tells before it evicts.

`EvictionCounts` is the pure part (the numbers and what a new reading means);
`recheck_sessions` is what the manager runs on growth.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from .backup_queue import BackupQueue, Refresh
from .errors import MemcachedError
from .node_store import NodeStore
from .session import Session
from .stats import Stats

log = logging.getLogger("sessionstore")

EVICTING_WINDOW = 300.0  # seconds a node counts as "evicting" after its count last grew


@dataclass(frozen=True, slots=True)
class NodeEvictions:
    """What /health says about one node: its `evictions` count when last read (None: never
    read), whether it grew in the last EVICTING_WINDOW seconds, and from the same reading
    the items it holds, their bytes and its memory limit (None: never read, or the node's
    `stats` lack them)."""

    evictions: int | None
    evicting: bool
    items: int | None = None
    bytes: int | None = None
    limit_maxbytes: int | None = None


@dataclass(frozen=True, slots=True)
class NodeMemory:
    """`curr_items`, `bytes` and `limit_maxbytes` of one `stats` reading."""

    items: int | None
    bytes: int | None
    limit_maxbytes: int | None

    @classmethod
    def from_stats(cls, stats: Mapping[str, str]) -> NodeMemory:
        return cls(_stat(stats, "curr_items"), _stat(stats, "bytes"),
                   _stat(stats, "limit_maxbytes"))


def _stat(stats: Mapping[str, str], name: str) -> int | None:
    """One counter of a `stats` reply; None when absent or not a whole number (a server that
    speaks the protocol but keeps other counters, like a proxy in front of memcached)."""
    value = stats.get(name, "")
    return int(value) if value.isascii() and value.isdigit() else None


_UNREAD = NodeMemory(None, None, None)


class EvictionCounts:
    """The `evictions` reading of each node; times in seconds, passed in."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}
        self._grew_at: dict[str, float] = {}
        self._memory: dict[str, NodeMemory] = {}

    def observe_memory(self, node: str, memory: NodeMemory) -> None:
        self._memory[node] = memory

    def observe(self, node: str, evictions: int, now: float) -> int:
        """Record a reading; returns how much it grew since the previous one (the whole count
        at the first reading: items evicted before we looked are lost all the same). A lower
        count means memcached restarted: a new baseline, no growth."""
        previous = self._last.get(node)
        self._last[node] = evictions
        growth = evictions if previous is None else evictions - previous
        if growth <= 0:
            return 0
        self._grew_at[node] = now
        return growth

    def nodes(self) -> set[str]:
        return set(self._last) | set(self._memory)

    def forget(self, node: str) -> None:
        self._last.pop(node, None)
        self._grew_at.pop(node, None)
        self._memory.pop(node, None)

    def status(self, node: str, now: float) -> NodeEvictions:
        grew_at = self._grew_at.get(node)
        memory = self._memory.get(node, _UNREAD)
        return NodeEvictions(self._last.get(node),
                             grew_at is not None and now - grew_at < EVICTING_WINDOW,
                             memory.items, memory.bytes, memory.limit_maxbytes)

    def evicting(self, now: float) -> int:
        """How many nodes are evicting now."""
        return sum(now - at < EVICTING_WINDOW for at in self._grew_at.values())


class EvictionWatch:
    def __init__(self, *, store: NodeStore, stats: Stats, interval: float,
                 on_growth: Callable[[str], Coroutine[Any, Any, None]]) -> None:
        self.store = store
        self.stats = stats
        self.interval = interval
        self.on_growth = on_growth
        self.counts = EvictionCounts()
        self._rechecks: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()  # grew again while being re-checked

    def status(self, node: str) -> NodeEvictions:
        return self.counts.status(node, self.store.clock())

    async def rechecks_done(self) -> None:
        """Wait for the re-checks under way (and those they started) to end."""
        while self._rechecks:
            await asyncio.wait(set(self._rechecks.values()))

    async def run(self) -> None:
        """Poll now and then every `interval` seconds until cancelled."""
        try:
            while True:
                try:
                    await self.poll()
                except Exception:  # a bug must not end the watch for good
                    log.exception("memcached stats poll failed")
                await asyncio.sleep(self.interval)
        finally:
            for task in self._rechecks.values():
                task.cancel()
            for task in list(self._rechecks.values()):
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def poll(self) -> None:
        """Read every node's stats once (concurrently, each bounded)."""
        nodes = list(self.store.clients)
        for gone in self.counts.nodes() - set(nodes):
            self.counts.forget(gone)
        await asyncio.gather(*(self._poll_node(node) for node in nodes))
        self.stats.nodes_evicting = self.counts.evicting(self.store.clock())

    async def _poll_node(self, node: str) -> None:
        if not self.store.alive(node):
            return  # no probing here: the next session operation does that
        try:
            stats = await self.store.call(node, "stats", lambda client: client.stats())
        except MemcachedError as exc:
            log.debug("stats of %s failed: %s", node, exc)
            return
        self.counts.observe_memory(node, NodeMemory.from_stats(stats))
        try:
            evictions = int(stats["evictions"])
        except (KeyError, ValueError):
            log.debug("stats of %s have no evictions count", node)
            return
        growth = self.counts.observe(node, evictions, self.store.clock())
        if growth <= 0:
            return
        self.stats.memcached_evictions += growth
        log.warning("memcached node %s evicted %d items (%d since it started): it is out of "
                    "memory and throwing session backups away", node, growth, evictions)
        if node in self._rechecks:  # one re-check per node at a time; another one after it
            self._again.add(node)
        else:
            self._recheck(node)

    def _recheck(self, node: str) -> None:
        task = asyncio.get_running_loop().create_task(self.on_growth(node))
        self._rechecks[node] = task
        task.add_done_callback(lambda done: self._recheck_done(node, done))

    def _recheck_done(self, node: str, task: asyncio.Task[None]) -> None:
        if self._rechecks.get(node) is task:
            del self._rechecks[node]
        if task.cancelled():
            return
        if task.exception() is not None:
            log.error("re-check of sessions on %s crashed", node, exc_info=task.exception())
        if node in self._again:
            self._again.discard(node)
            self._recheck(node)


async def recheck_sessions(node: str, held: Mapping[str, Session], *, queue: BackupQueue,
                           alive: Callable[[str], bool], concurrency: int) -> int:
    """Touch each session in `held` backed up to `node` (`concurrency` at a time), through
    its queue; a copy memcached lost is written again at once, in full, as memcached last
    held it (a newer change, if any, goes with the session's own next write). Returns how
    many were checked."""
    sessions = iter([session for session in held.values()
                     if session.sid.node == node and session.stored_attributes is not None
                     and session.loaded_id == session.sid])
    checked = 0

    async def check() -> None:
        nonlocal checked
        for session in sessions:
            if held.get(session.sid.random) is not session or session.sid.node != node \
                    or not alive(node):
                continue  # gone, moved, or the node died meanwhile
            checked += 1
            await queue.submit(session.sid.random, Refresh(session, with_backup=False))

    await asyncio.gather(*(check() for _ in range(concurrency)))
    return checked
