"""One pipelined memcached connection (taken from aiomcache's pool): what the choke point in
client.py runs every operation on.

memcached answers the commands of one connection in the order it read them, so many
operations can be in flight on one connection: each command is queued with the parser of its
reply and a future, the commands of one event-loop iteration leave in one write, and the
replies are parsed as the bytes arrive, in order, each resolving its future. With fifty
requests at once that is one send and one receive for a batch of operations instead of one
each, and no operation waits for a connection to come free: there is no pool queue to starve
in.

The connection is aiomcache's (its pool opens, hands out and closes it); the line takes over
its transport as the protocol (`set_protocol`), so a reply is parsed in `data_received`
itself: no reader task to wake, no `readline` coroutine per reply, one loop step less
between memcached's answer and the request that waits for it.

The trap guards stay whole:
- a connection closed mid-command (EOF, reset) fails every operation on it at once, and a
  closed connection never spins the loop: there is no read loop to spin;
- a reply that does not fit its command (another key, a malformed line, bytes nobody asked
  for, a line or value longer than any reply) discards the connection, and every operation
  still waiting on it fails;
- an operation that times out discards the connection, with every operation still waiting
  on it (the node did not answer in time: they would not fare better). One timer per line
  watches the oldest operation still waited for (replies come in order, so it is the first
  to be late) and fails it with TimeoutError at its deadline;
- an operation that is cancelled (its request went away) leaves its reply to be parsed and
  thrown away: the reply never answers another operation, and the connection stays in step
  for the others.
A discarded connection is poisoned and handed back to aiomcache's pool, which closes it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

from aiomcache.pool import Connection, MemcachePool

Parser = Callable[[bytes | bytearray, int], "tuple[Any, int] | None"]
"""Parses one reply in `data` from `pos`: (what it says, where the next reply starts), or None
while the reply is not complete. Raises ProtocolError for bytes that fit no reply; a whole
error line (SERVER_ERROR, CLIENT_ERROR, ERROR) is returned as an ErrorReply."""

_MAX_LINE = 2048  # the longest reply line: VALUE, a 250-byte key, flags, length, cas
_MAX_VALUE = 64 * 1024 * 1024  # memcached's item size limit is at most 1 GB, ours far less


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


def line_end(data: bytes | bytearray, pos: int) -> int:
    """Where the reply line starting at `pos` ends (after its CRLF); -1 while incomplete."""
    end = data.find(b"\r\n", pos, pos + _MAX_LINE)
    if end >= 0:
        return end + 2
    if len(data) - pos >= _MAX_LINE:
        raise ProtocolError(f"reply line longer than {_MAX_LINE} bytes")
    return -1


def value_length(text: bytes) -> int:
    """A reply's announced value length, checked to be one."""
    if not text.isdigit() or len(text) > 10 or int(text) > _MAX_VALUE:
        raise ProtocolError(f"bad value length {text[:20]!r}")
    return int(text)


def error_reply(line: bytes) -> ErrorReply:
    """The ErrorReply a whole error line is; ProtocolError for any other unexpected line."""
    text = line.decode("ascii", "replace").strip()
    if text.startswith(("SERVER_ERROR", "CLIENT_ERROR", "ERROR")):
        return ErrorReply(text[:200])
    raise ProtocolError(f"unexpected reply {text[:80]!r}")


class Line(asyncio.Protocol):
    """One connection with operations in flight, replies parsed in order as they arrive."""

    __slots__ = ("_buffer", "_loop", "_out", "_pool", "_transport", "_waiting", "_watchdog",
                 "_writable", "conn", "dead")

    def __init__(self, conn: Connection, pool: MemcachePool) -> None:
        self.conn = conn
        self._pool = pool
        self._loop = asyncio.get_running_loop()
        self._out: list[bytes] = []
        # (parser, future, deadline) of each command sent, in order
        self._waiting: deque[tuple[Parser, asyncio.Future[Any], float]] = deque()
        self._watchdog: asyncio.TimerHandle | None = None  # at the oldest live deadline
        self._buffer = bytearray()  # the start of a reply whose end has not arrived
        self._writable: asyncio.Future[None] | None = None  # set while writing is paused
        self.dead = False
        self._transport = conn.writer.transport
        reader = conn.reader
        # Idle in the pool until now: nothing may have arrived on it (the server closed it,
        # or sent what nobody asked for).
        if reader.at_eof() or reader.exception() is not None or self._transport.is_closing():
            self.discard(Discarded("connection closed by the server", blame=True))
        else:
            self._transport.set_protocol(self)

    @property
    def usable(self) -> bool:
        """Not discarded, and the server has not closed it (a restarted memcached) since."""
        return not self.dead

    def send(self, command: bytes, parse: Parser, deadline: float) -> asyncio.Future[Any]:
        """Send `command`: at once when nothing is in flight, else with the other commands
        of this loop iteration, in one write at its end. The future gets what `parse` makes
        of its reply, or TimeoutError when there is none by `deadline` (loop time)."""
        future: asyncio.Future[Any] = self._loop.create_future()
        if not self._waiting and not self._out:
            self._out.append(command)
            self.flush()
        else:
            if not self._out:
                self._loop.call_soon(self.flush)
            self._out.append(command)
        self._waiting.append((parse, future, deadline))
        if self._watchdog is None:
            self._watchdog = self._loop.call_at(deadline, self._overdue)
        return future

    def _overdue(self) -> None:
        """The watchdog's time: the oldest operation still waited for is late (TimeoutError:
        its caller discards the line), or the watch moves on to its deadline."""
        self._watchdog = None
        now = self._loop.time()
        for _, future, deadline in self._waiting:
            if future.done():
                continue  # cancelled: its reply is still to come, nobody waits for it
            if deadline <= now:
                future.set_exception(TimeoutError())
            else:
                self._watchdog = self._loop.call_at(deadline, self._overdue)
            return

    def flush(self) -> None:
        """Write the queued commands now (in one write)."""
        out = self._out
        if self.dead or not out:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        try:
            self._transport.write(data)
        except (OSError, RuntimeError) as exc:  # the transport is closing or closed
            self._loop.call_soon(self.discard, Discarded(str(exc) or type(exc).__name__,
                                                         blame=True))

    async def drain(self) -> None:
        """Flush, then wait until the transport's buffer is low again (large values)."""
        self.flush()
        writable = self._writable
        if writable is not None:
            await writable

    # -- asyncio.Protocol ----------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        if buffer:
            buffer += data
            data = buffer  # type: ignore[assignment]  # parsers read bytes and bytearrays
        waiting = self._waiting
        pos = 0
        try:
            while pos < len(data):
                if not waiting:
                    raise ProtocolError("bytes nobody asked for")
                parse, future, _ = waiting[0]
                parsed = parse(data, pos)
                if parsed is None:
                    break  # the rest of this reply is still to come
                result, pos = parsed
                waiting.popleft()
                if future.done():
                    continue  # a cancelled operation's reply is thrown away
                if isinstance(result, ErrorReply):  # a whole reply: the line is in step
                    future.set_exception(result)
                else:
                    future.set_result(result)
        except ProtocolError as exc:  # a reply that fits no command
            self.discard(Discarded(str(exc), blame=True))
            return
        if data is buffer:
            del buffer[:pos]
        elif pos < len(data):
            buffer += data[pos:]

    def eof_received(self) -> bool:
        self.discard(Discarded("connection closed before the reply was complete",
                               blame=True))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        reason = "connection closed before the reply was complete"
        self.discard(Discarded(f"{reason}: {exc}" if exc else reason, blame=True))

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = self._loop.create_future()

    def resume_writing(self) -> None:
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    # -- the end -------------------------------------------------------------------------

    def discard(self, error: Discarded) -> None:
        """Fail every operation still waiting, and close the connection (poisoned, then
        handed back to the pool, which closes it). Idempotent."""
        if self.dead:
            return
        self.dead = True
        self._out.clear()
        self._buffer.clear()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        waiting = list(self._waiting)
        self._waiting.clear()
        for _, future, _ in waiting:
            if not future.done():
                future.set_exception(error)
        self.resume_writing()  # a drain waiting on it ends; its operation has failed
        self.conn.reader.set_exception(ConnectionAbortedError("discarded"))
        self._pool.release(self.conn)
        self._transport.close()
