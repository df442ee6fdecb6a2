"""One pipelined memcached connection (taken from aiomcache's pool): what the choke point in
client.py runs every operation on.

memcached answers the commands of one connection in the order it read them, so many
operations can be in flight on one connection: each command is queued with the function that
reads its reply and a future, the commands of one event-loop iteration leave in one write,
and one reader task reads the replies in order and resolves the futures. With fifty requests
at once that is one send and one receive for a batch of operations instead of one each (on
this project's machines a system call costs more than the Python around it), and no
operation waits for a connection to come free: there is no pool queue to starve in.

The trap guards stay whole:
- the reader raises at EOF (`read_line`), so a connection closed mid-command fails every
  operation on it at once and never spins the loop;
- a reply that does not fit its command (another key, a malformed line) discards the
  connection, and every operation still waiting on it fails;
- an operation that times out discards the connection, with every operation still waiting
  on it (the node did not answer in time: they would not fare better);
- an operation that is cancelled (its request went away) leaves its reply to the reader,
  which reads it and throws it away: the reply never answers another operation, and the
  connection stays in step for the others.
A discarded connection is poisoned and handed back to aiomcache's pool, which closes it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from aiomcache.pool import Connection, MemcachePool

Reader = Callable[[asyncio.StreamReader], Awaitable[Any]]


class ProtocolError(Exception):
    """The byte stream is not a well-formed reply to what we sent (or it ended early)."""


class ErrorReply(Exception):
    """A complete error line from the server (SERVER_ERROR, CLIENT_ERROR, ERROR): the
    connection is still in step."""


class Discarded(Exception):
    """The connection an operation was waiting on was discarded. `blame`: because the node
    failed (else: because this process's event loop was stalled)."""

    def __init__(self, reason: str, *, blame: bool) -> None:
        self.reason = reason
        self.blame = blame
        super().__init__(reason)


async def read_line(reader: asyncio.StreamReader) -> bytes:
    line = await reader.readline()
    if not line.endswith(b"\r\n"):
        # b'' is EOF: raising here is what keeps a closed connection from spinning the loop.
        raise ProtocolError("connection closed before the reply was complete")
    return line


class Line:
    """One connection with operations in flight, replies read in order."""

    __slots__ = ("_idle", "_loop", "_out", "_pool", "_reading", "_waiting", "conn", "dead")

    def __init__(self, conn: Connection, pool: MemcachePool) -> None:
        self.conn = conn
        self._pool = pool
        self._loop = asyncio.get_running_loop()
        self._out: list[bytes] = []
        self._waiting: deque[tuple[Reader, asyncio.Future[Any]]] = deque()
        self._idle: asyncio.Future[None] | None = None  # the reader waits on it for work
        self.dead = False
        self._reading = self._loop.create_task(self._read_replies())

    @property
    def usable(self) -> bool:
        """Not discarded, and the server has not closed it (a restarted memcached) since."""
        reader = self.conn.reader
        return not self.dead and not reader.at_eof() and reader.exception() is None

    def send(self, command: bytes, read: Reader) -> asyncio.Future[Any]:
        """Send `command`: at once when nothing is in flight, else with the other commands
        of this loop iteration, in one write at its end. The future gets what `read` makes
        of its reply."""
        future: asyncio.Future[Any] = self._loop.create_future()
        if not self._waiting and not self._out:
            self._out.append(command)
            self.flush()
        else:
            if not self._out:
                self._loop.call_soon(self.flush)
            self._out.append(command)
        self._waiting.append((read, future))
        idle = self._idle
        if idle is not None:
            self._idle = None
            idle.set_result(None)
        return future

    def flush(self) -> None:
        """Write the queued commands now (in one write)."""
        out = self._out
        if self.dead or not out:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        try:
            self.conn.writer.write(data)
        except (OSError, RuntimeError) as exc:  # the transport is closing or closed
            self._loop.call_soon(self.discard, Discarded(str(exc) or type(exc).__name__,
                                                         blame=True))

    async def drain(self) -> None:
        """Flush, then wait until the transport's buffer is low again (large values)."""
        self.flush()
        await self.conn.writer.drain()

    async def _read_replies(self) -> None:
        waiting = self._waiting
        reader = self.conn.reader
        try:
            while True:
                if not waiting:
                    self._idle = self._loop.create_future()
                    await self._idle
                    continue
                read, future = waiting[0]
                try:
                    result = await read(reader)
                except ErrorReply as exc:  # a whole reply: the connection is in step
                    waiting.popleft()
                    if not future.done():
                        future.set_exception(exc)
                    continue
                waiting.popleft()
                if not future.done():  # a cancelled operation's reply is thrown away
                    future.set_result(result)
        except asyncio.CancelledError:
            raise  # discarded from outside
        except Exception as exc:  # EOF, reset, a reply that fits no command
            self.discard(Discarded(str(exc) or type(exc).__name__, blame=True))

    def discard(self, error: Discarded) -> None:
        """Fail every operation still waiting, and close the connection (poisoned, then
        handed back to the pool, which closes it). Idempotent."""
        if self.dead:
            return
        self.dead = True
        self._out.clear()
        waiting = list(self._waiting)
        self._waiting.clear()
        for _, future in waiting:
            if not future.done():
                future.set_exception(error)
        if self._reading is not asyncio.current_task():
            self._reading.cancel()
        self.conn.reader.set_exception(ConnectionAbortedError("discarded"))
        self._pool.release(self.conn)
