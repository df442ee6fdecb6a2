"""BackupScheduler: runs the end-of-request memcached work and decides what a response may say.

Each request's operation goes into the session's line of the BackupQueue (one operation at a
time per session, writes coalesced); a non-sticky lock is released once that operation is
done, so the next holder loads what this request stored.

Durable acknowledgement (session_backup_async = false): `finish` answers True only when the
request's change is confirmed in memcached, by a write that started after the change was made
(see backup_queue.py). When it is not confirmed within session_backup_timeout, or the write
failed, `finish` answers False and the middleware sends 503 with Retry-After, as a backend
that cannot commit would; the write itself goes on, so the change may still land (retrying is
safe). One exception, ARCHITECTURE's failure model: with sticky sessions and every memcached
node dead, the session lives on in memory and the answer is the handler's (/health says
"degraded"). With session_backup_async = true answers never wait, and a 2xx promises nothing
about memcached.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from .backup_queue import BackupQueue, Operation, Write
from .locking import HeldLock, SessionLocks
from .session import Session
from .stats import Stats
from .waiting import until_done

log = logging.getLogger("sessionstore")


class BackupScheduler:
    """The queue of session operations plus the lock releases waiting behind them.

    `degraded()` says whether a failed write may still be answered as a success (sticky
    mode with every node dead)."""

    def __init__(self, *, queue: BackupQueue, locks: SessionLocks, stats: Stats,
                 backup_async: bool, backup_timeout: float,
                 degraded: Callable[[], bool]) -> None:
        self.queue = queue
        self.locks = locks
        self.stats = stats
        self.backup_async = backup_async
        self.backup_timeout = backup_timeout
        self.degraded = degraded
        self._pending: set[asyncio.Task[Any]] = set()  # lock releases after their backup

    def busy(self, key: str) -> bool:
        """True while an operation of this session (its id's random part) runs or waits."""
        return self.queue.busy(key)

    def submit(self, key: str, operation: Operation) -> asyncio.Future[bool]:
        return self.queue.submit(key, operation)

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
        if self.backup_async or awaited is None:
            return True
        timeout = self.backup_timeout
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
        if self.degraded():
            return True  # every node is dead: the session lives on in memory ("degraded")
        self.stats.backups_unconfirmed += 1
        return False

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

    def running(self) -> set[asyncio.Task[Any]]:
        return self.queue.running() | self._pending

    async def flush(self, within: float) -> None:
        """Wait for background work (queued operations too), at most `within` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while running := self.running():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            await asyncio.wait(running, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)

    async def cancel(self) -> None:
        """Cancel what runs, drop what waits, and wait until every task has ended."""
        self.queue.cancel()
        for task in list(self._pending):
            task.cancel()
        while running := self.running():
            await asyncio.wait(running)
