"""The one memcached choke point: text protocol over aiomcache's connection pool.

Why not aiomcache's commands: aiomcache 0.8.2 has two traps.
1. Its ``@acquire`` only poisons the connection on ``Exception``; a timeout or cancel
   (``CancelledError``) hands the connection back with the old reply unread, and the next
   ``get`` on it reads that stale reply (a miss for a session that exists).
2. ``_execute_simple_command`` loops on ``readline()`` until a line ends in CRLF; at EOF
   ``readline()`` returns ``b''`` at once, forever, without yielding: the event loop freezes.

Here every operation runs under ``asyncio.timeout(operation_timeout)`` (connect included),
its reply is read by a reader that raises on EOF and checks that a ``VALUE`` (or meta ``VA``)
reply names the key asked for, and a timeout, EOF or protocol error closes the connection.
A cancelled operation's reply is read and thrown away by the connection's reader, so it can
never answer another operation (pipeline.py).

Operations run pipelined on one connection taken from aiomcache's pool (pipeline.py): the
commands of one loop iteration leave in one write and the replies are read in order by one
reader. That also keeps clear of a third trap, the pool's queue: aiomcache's
``MemcachePool.acquire`` waits on an ``asyncio.Queue``, where a connection put back goes to
whoever asks next rather than to the longest waiter, so under a few dozen concurrent requests
some waited for seconds, timed out, and a healthy node was marked dead.

Beyond aiomcache's commands: ``get_with_ttl`` is memcached's meta get (``mg <key> v t k``),
the value and its remaining time to live in one round trip, which tells when the copy was
last written or touched without a separate validity record.

A timeout is the node's fault (NodeFailureError: it gets marked dead) unless it fired so late
that this process's own event loop was stalled for longer than the whole budget (handlers
hogging the CPU under a flood): then it is LoopStalledError, and the node stays in rotation.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import NoReturn, TypeVar

from aiomcache.pool import MemcachePool

from .errors import LoopStalledError, NodeFailureError, ServerReplyError
from .pipeline import Discarded, ErrorReply, Line, ProtocolError, read_line

_T = TypeVar("_T")

_STORAGE_REPLIES = {b"STORED\r\n": True, b"NOT_STORED\r\n": False,
                    b"EXISTS\r\n": False, b"NOT_FOUND\r\n": False}
_DELETE_REPLIES = {b"DELETED\r\n": True, b"NOT_FOUND\r\n": False}
_TOUCH_REPLIES = {b"TOUCHED\r\n": True, b"NOT_FOUND\r\n": False}
_META_MISS = b"EN"
_META_VALUE = b"VA"
_MAX_KEY_LENGTH = 250
_MAX_STATS_LINES = 512  # memcached 1.6 sends about 90; more is not a stats reply
_DRAIN_ABOVE = 64 * 1024


_BAD_KEY_BYTE = re.compile(rb"[\x00-\x20\x7f]")


def _check_key(key: bytes) -> None:
    if not 0 < len(key) <= _MAX_KEY_LENGTH or _BAD_KEY_BYTE.search(key) is not None:
        raise ValueError(f"invalid memcached key {key[:60]!r}")


class MemcachedClient:
    """A pipelined connection to one memcached node; every operation bounded, and clean or
    its connection discarded.

    `pool_size` bounds aiomcache's pool underneath; one connection of it carries every
    operation in flight (pipelined), so more are never needed at once."""

    def __init__(self, *, node: str, host: str, port: int, operation_timeout: float,
                 pool_size: int = 4) -> None:
        self.node = node
        self.host = host
        self.port = port
        self.operation_timeout = operation_timeout
        self.pool_size = pool_size
        self._pool = MemcachePool(host, port, minsize=1, maxsize=max(1, pool_size))
        self._line: Line | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._closed = False

    async def __aenter__(self) -> MemcachedClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every connection, idle or in use (operations in flight fail). Idempotent."""
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        if self._line is not None:
            self._line.discard(Discarded("client is closed", blame=False))
        await self._pool.clear()
        for conn in list(self._pool._in_use):
            conn.writer.close()

    # -- operations ---------------------------------------------------------------------

    async def get(self, key: bytes) -> bytes | None:
        _check_key(key)

        async def read(reader: asyncio.StreamReader) -> bytes | None:
            line = await read_line(reader)
            if line == b"END\r\n":
                return None
            parts = line.split()
            if len(parts) != 4 or parts[0] != b"VALUE":
                _raise_for(line)
            if parts[1] != key:
                raise ProtocolError(f"reply for {parts[1][:60]!r}, asked for {key[:60]!r}")
            length = int(parts[3])
            data = await reader.readexactly(length + 2)
            if data[-2:] != b"\r\n" or await read_line(reader) != b"END\r\n":
                raise ProtocolError("malformed VALUE reply")
            return data[:-2]

        return await self._run("get", b"get " + key + b"\r\n", read)

    async def get_with_ttl(self, key: bytes) -> tuple[bytes, int] | None:
        """The value and its remaining time to live in seconds (-1: none), one round trip
        (meta get); None on a miss."""
        _check_key(key)

        async def read(reader: asyncio.StreamReader) -> tuple[bytes, int] | None:
            line = await read_line(reader)
            parts = line.split()
            if parts and parts[0] == _META_MISS:
                return None
            if len(parts) != 4 or parts[0] != _META_VALUE or not parts[1].isdigit():
                _raise_for(line)
            flags = {part[:1]: part[1:] for part in parts[2:]}
            if flags.get(b"k") != key:
                raise ProtocolError(f"meta reply for {line[:80]!r}, asked for {key[:60]!r}")
            try:
                ttl = int(flags[b"t"])
            except (KeyError, ValueError):
                raise ProtocolError(f"meta reply without a TTL: {line[:80]!r}") from None
            data = await reader.readexactly(int(parts[1]) + 2)
            if data[-2:] != b"\r\n":
                raise ProtocolError("malformed VA reply")
            return data[:-2], ttl

        return await self._run("get", b"mg " + key + b" v t k\r\n", read)

    async def set(self, key: bytes, value: bytes, exptime: int) -> bool:
        return await self._store(b"set", key, value, exptime)

    async def add(self, key: bytes, value: bytes, exptime: int) -> bool:
        """Store only if absent (the lock primitive); False when the key exists."""
        return await self._store(b"add", key, value, exptime)

    async def delete(self, key: bytes) -> bool:
        _check_key(key)
        return await self._run("delete", b"delete " + key + b"\r\n", _replies(_DELETE_REPLIES))

    async def touch(self, key: bytes, exptime: int) -> bool:
        """Refresh the expiry without transferring the value; False when the key is gone."""
        _check_key(key)
        command = b"touch " + key + b" " + str(exptime).encode() + b"\r\n"
        return await self._run("touch", command, _replies(_TOUCH_REPLIES))

    async def version(self) -> str:
        async def read(reader: asyncio.StreamReader) -> str:
            line = await read_line(reader)
            if not line.startswith(b"VERSION "):
                _raise_for(line)
            return line[8:-2].decode("ascii", "replace")

        return await self._run("version", b"version\r\n", read)

    async def stats(self) -> dict[str, str]:
        """The general-purpose statistics (``stats``): name -> value as memcached sends it.
        (aiomcache's Client.stats() would hand a timed-out connection back, reply unread.)"""
        async def read(reader: asyncio.StreamReader) -> dict[str, str]:
            values: dict[str, str] = {}
            for _ in range(_MAX_STATS_LINES):
                line = await read_line(reader)
                if line == b"END\r\n":
                    return values
                parts = line[:-2].split(b" ", 2)
                if len(parts) < 2 or parts[0] != b"STAT":
                    _raise_for(line)
                value = parts[2] if len(parts) == 3 else b""
                values[parts[1].decode("ascii", "replace")] = value.decode("ascii", "replace")
            raise ProtocolError(f"stats reply longer than {_MAX_STATS_LINES} lines")

        return await self._run("stats", b"stats\r\n", read)

    async def _store(self, verb: bytes, key: bytes, value: bytes, exptime: int) -> bool:
        _check_key(key)
        if exptime < 0:
            raise ValueError("negative exptime")
        command = b"%s %s 0 %d %d\r\n%s\r\n" % (verb, key, exptime, len(value), value)
        return await self._run(verb.decode(), command, _replies(_STORAGE_REPLIES))

    # -- the choke point ----------------------------------------------------------------

    async def _run(self, operation: str, command: bytes,
                   read: Callable[[asyncio.StreamReader], Awaitable[_T]]) -> _T:
        if self._closed:
            raise NodeFailureError(self.node, operation, "client is closed")
        loop = asyncio.get_running_loop()
        started = loop.time()
        line = self._line
        try:
            if line is None or not line.usable or len(command) > _DRAIN_ABOVE:
                async with asyncio.timeout_at(started + self.operation_timeout):
                    if line is None or not line.usable:
                        line = await self._connect()
                    future = line.send(command, read)
                    if len(command) > _DRAIN_ABOVE:
                        await line.drain()
                    result: _T = await future
                return result
            # The common case, a live connection and a small command: one timer on the reply
            # is all the bound needs (asyncio.timeout's machinery costs more than the send).
            future = line.send(command, read)
            timer = loop.call_at(started + self.operation_timeout, _time_out, future)
            try:
                result = await future
            finally:
                timer.cancel()
            return result
        except TimeoutError:
            late = loop.time() - started - self.operation_timeout
            stalled = late > self.operation_timeout
            reason = (f"no reply read within {self.operation_timeout}s, with this process's "
                      f"event loop {late:.2f}s late" if stalled
                      else f"no reply within {self.operation_timeout}s")
            if line is not None:  # its unread reply must never be read: away with it all
                line.discard(Discarded(reason, blame=not stalled))
            if stalled:
                raise LoopStalledError(self.node, operation, reason) from None
            raise NodeFailureError(self.node, operation, reason) from None
        except Discarded as exc:
            kind = NodeFailureError if exc.blame else LoopStalledError
            raise kind(self.node, operation, exc.reason) from None
        except ErrorReply as exc:
            raise ServerReplyError(self.node, operation, str(exc)) from None
        except (OSError, EOFError, ProtocolError, ValueError) as exc:
            reason = str(exc) or type(exc).__name__
            if line is not None:
                line.discard(Discarded(reason, blame=True))
            raise NodeFailureError(self.node, operation, reason) from None

    async def _connect(self) -> Line:
        """The live line, opening a connection if there is none (one connect shared by the
        operations that arrive meanwhile; it is bounded by operation_timeout by itself, so
        a connect that hangs never outlives the operations waiting on it)."""
        while True:
            task = self._connecting
            if task is None:
                task = self._connecting = asyncio.get_running_loop().create_task(
                    self._open())
                task.add_done_callback(_retrieve)
            await asyncio.shield(task)  # another operation's timeout must not cancel it
            line = self._line
            if line is not None and line.usable:
                return line

    async def _open(self) -> None:
        if self._line is not None:  # closed by the server meanwhile: away with it
            self._line.discard(Discarded("closed by the server", blame=True))
            self._line = None
        try:
            conn = await asyncio.wait_for(self._pool.acquire(), self.operation_timeout)
            if self._closed:
                conn.writer.close()
                raise NodeFailureError(self.node, "connect", "client is closed")
            self._line = Line(conn, self._pool)
        finally:
            self._connecting = None


def _time_out(future: asyncio.Future[object]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


def _retrieve(task: asyncio.Task[None]) -> None:
    """Mark a connect's failure as seen: the operations that waited for it may all have
    given up (timed out) before it ended."""
    if not task.cancelled():
        task.exception()


def _replies(table: dict[bytes, bool]) -> Callable[[asyncio.StreamReader], Awaitable[bool]]:
    async def read(reader: asyncio.StreamReader) -> bool:
        line = await read_line(reader)
        outcome = table.get(line)
        if outcome is None:
            _raise_for(line)
        return bool(outcome)

    return read


def _raise_for(line: bytes) -> NoReturn:
    text = line.decode("ascii", "replace").strip()
    if text.startswith(("SERVER_ERROR", "CLIENT_ERROR", "ERROR")):
        raise ErrorReply(text[:200])
    raise ProtocolError(f"unexpected reply {text[:80]!r}")
