"""Each session's memcached work, one operation at a time, with writes coalesced.

Per session (the random part of its id) at most one operation runs; the others wait behind
it, in order. A write asked for while a write of the same session object is waiting (not
yet started) joins it: when the running operation ends, ONE write carries the newest state
of everyone waiting and acknowledges them all. Joining only a write that has not started
means a write acknowledges only changes made before it started, so "acknowledged" means
"in memcached". With 600 concurrent changes to one session, that is a handful of writes
instead of 600 in a row, each of which the last one waited behind.

Each `submit` returns a future: True when the operation succeeded, False when it failed or
was cancelled (close). Futures never carry exceptions: nobody has to retrieve them.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass

from .backup import SessionBackup
from .session import Session
from .stats import Stats

log = logging.getLogger("sessionstore")


@dataclass(slots=True)
class Write:
    """Store the session's attributes, `encoded` as planned by the last request that ended."""

    session: Session
    encoded: bytes
    with_backup: bool


@dataclass(slots=True)
class Refresh:
    """Keep the stored copy from expiring; write it again if memcached lost it."""

    session: Session
    with_backup: bool


@dataclass(slots=True)
class Delete:
    """Remove the session's copies under the id memcached holds it by when this runs (a write
    queued before may still move it)."""

    session: Session
    with_backup: bool


Operation = Write | Refresh | Delete


def joined(waiting: Operation, new: Operation) -> Operation | None:
    """The one operation doing both (`waiting` has not started), or None when they stay apart.
    A write also refreshes; writes of different objects (non-sticky requests each load their
    own copy) stay apart, in order."""
    if waiting.session is not new.session:
        return None
    if isinstance(waiting, Delete) or isinstance(new, Delete):
        return waiting if isinstance(waiting, Delete) and isinstance(new, Delete) else None
    with_backup = waiting.with_backup or new.with_backup
    if isinstance(new, Write):
        return Write(new.session, new.encoded, with_backup)
    if isinstance(waiting, Write):
        return Write(waiting.session, waiting.encoded, with_backup)
    return Refresh(new.session, with_backup)


class _Job:
    __slots__ = ("operation", "waiters")

    def __init__(self, operation: Operation) -> None:
        self.operation = operation
        self.waiters: list[asyncio.Future[bool]] = []


class _Line:
    """One session's queue: the job running and those waiting behind it."""

    __slots__ = ("running", "waiting")

    def __init__(self) -> None:
        self.running: asyncio.Task[bool] | None = None
        self.waiting: deque[_Job] = deque()


class BackupQueue:
    def __init__(self, *, backup: SessionBackup, stats: Stats) -> None:
        self.backup = backup
        self.stats = stats
        self._lines: dict[str, _Line] = {}

    def busy(self, key: str) -> bool:
        """True while an operation of this session runs or waits."""
        return key in self._lines

    def __len__(self) -> int:
        return len(self._lines)

    def running(self) -> set[asyncio.Task[bool]]:
        return {line.running for line in self._lines.values() if line.running is not None}

    def submit(self, key: str, operation: Operation) -> asyncio.Future[bool]:
        """Queue `operation` for session `key`; the future says how it went."""
        line = self._lines.get(key)
        if line is None:
            line = self._lines[key] = _Line()
        last = line.waiting[-1] if line.waiting else None
        merged = joined(last.operation, operation) if last is not None else None
        if last is not None and merged is not None:
            last.operation = merged
            job = last
            if isinstance(operation, Write):
                self.stats.backups_coalesced += 1
        else:
            job = _Job(operation)
            line.waiting.append(job)
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        job.waiters.append(waiter)
        if line.running is None:
            self._start_next(key, line)
        return waiter

    def cancel(self) -> None:
        """Cancel what runs and drop what waits (close); every waiter hears False."""
        for line in self._lines.values():
            for job in line.waiting:
                _resolve(job.waiters, False)
            line.waiting.clear()
            if line.running is not None:
                line.running.cancel()

    def _start_next(self, key: str, line: _Line) -> None:
        job = line.waiting.popleft()
        task = asyncio.get_running_loop().create_task(self._run(job.operation))
        line.running = task
        task.add_done_callback(lambda done: self._finished(key, line, job, done))

    def _finished(self, key: str, line: _Line, job: _Job, task: asyncio.Task[bool]) -> None:
        ok = False
        if not task.cancelled():
            error = task.exception()
            if error is None:
                ok = task.result()
            else:
                log.error("session %s backup crashed", key, exc_info=error)
        _resolve(job.waiters, ok)
        line.running = None
        if line.waiting:
            self._start_next(key, line)
        elif self._lines.get(key) is line:
            del self._lines[key]

    async def _run(self, operation: Operation) -> bool:
        if isinstance(operation, Write):
            return await self.backup.write(operation.session, operation.encoded,
                                           with_backup=operation.with_backup)
        if isinstance(operation, Refresh):
            return await self.backup.refresh(operation.session,
                                             with_backup=operation.with_backup)
        await self.backup.delete(operation.session.loaded_id, with_backup=operation.with_backup)
        return True


def _resolve(waiters: list[asyncio.Future[bool]], ok: bool) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(ok)
