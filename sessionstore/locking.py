"""Non-sticky session locks: a memcached `add` of the `lock:` key with an expiry.

Which requests lock (`none`, `all`, `auto` = not GET/HEAD, `uriPattern:<regex>` = the path and
query match) is pure. Waiters back off (2 ms doubling to 50 ms, with jitter) until
`lock_timeout`, then give up with LockTimeoutError, which the middleware answers with 503 and
Retry-After (waiting longer would only pile requests up behind a stuck one). A lock expires in
memcached after 2 x lock_timeout + 1 s, so a holder that died blocks others at most that long.
When the lock's node is dead the request proceeds unlocked (as MSM does): availability first.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from .errors import LockTimeoutError, MemcachedError
from .ids import SessionId, storage_key
from .node_store import NodeStore
from .settings import LockingKind
from .stats import Stats

log = logging.getLogger("sessionstore")

_FIRST_BACKOFF = 0.002
_MAX_BACKOFF = 0.05
_READ_METHODS = frozenset({"GET", "HEAD"})


def needs_lock(kind: LockingKind, pattern: re.Pattern[str] | None, method: str,
               path_qs: str) -> bool:
    if kind == "none":
        return False
    if kind == "all":
        return True
    if kind == "auto":
        return method not in _READ_METHODS
    return pattern is not None and pattern.fullmatch(path_qs) is not None


@dataclass(frozen=True, slots=True)
class HeldLock:
    node: str
    key: bytes


class SessionLocks:
    def __init__(self, *, store: NodeStore, prefix: str, lock_timeout: float, stats: Stats,
                 clock: Callable[[], float]) -> None:
        self.store = store
        self.prefix = prefix
        self.lock_timeout = lock_timeout
        self.expiry = math.ceil(2 * lock_timeout) + 1
        self.stats = stats
        self.clock = clock

    async def acquire(self, sid: SessionId, node: str) -> HeldLock | None:
        """Hold the session's lock on `node`; None when the node cannot be locked (dead)."""
        key = storage_key(self.prefix, sid, "lock")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.lock_timeout
        backoff = _FIRST_BACKOFF
        waited = False
        while True:
            try:
                got = await self.store.call(node, "add",
                                            lambda client: client.add(key, b"1", self.expiry))
            except MemcachedError as exc:
                log.warning("cannot lock session %s on %s, going on unlocked: %s",
                            sid.text, node, exc)
                return None
            if got:
                return HeldLock(node, key)
            if not waited:
                waited = True
                self.stats.lock_waits += 1
            remaining = deadline - loop.time()
            if remaining <= 0:
                self.stats.lock_timeouts += 1
                raise LockTimeoutError(sid.text, self.lock_timeout)
            await asyncio.sleep(min(remaining, backoff * random.uniform(0.5, 1.0)))
            backoff = min(_MAX_BACKOFF, backoff * 2)

    async def release(self, lock: HeldLock) -> None:
        try:
            await self.store.call(lock.node, "delete", lambda client: client.delete(lock.key))
        except MemcachedError as exc:
            log.warning("releasing lock %r on %s failed (it expires by itself): %s",
                        lock.key, lock.node, exc)
