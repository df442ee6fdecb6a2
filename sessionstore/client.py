"""The one memcached choke point: text protocol over aiomcache's connection pool.

Why not aiomcache's commands: aiomcache 0.8.2 has two traps.
1. Its ``@acquire`` only poisons the connection on ``Exception``; a timeout or cancel
   (``CancelledError``) hands the connection back with the old reply unread, and the next
   ``get`` on it reads that stale reply (a miss for a session that exists).
2. ``_execute_simple_command`` loops on ``readline()`` until a line ends in CRLF; at EOF
   ``readline()`` returns ``b''`` at once, forever, without yielding: the event loop freezes.

Here every operation is bounded by operation_timeout (connect included; a reply parsed
after its deadline counts as late), its reply is parsed as it arrives, EOF fails it, a
``VALUE`` (or meta ``VA``) reply must name the key asked for, and a timeout, EOF or protocol
error closes the connection. A cancelled operation's reply is parsed and thrown away, so it
can never answer another operation (pipeline.py).

Operations run pipelined on one connection taken from aiomcache's pool (pipeline.py): the
commands of one loop iteration leave in one write and the replies are parsed in order. That
also keeps clear of a third trap, the pool's queue: aiomcache's
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
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

from aiomcache.pool import MemcachePool

from .errors import LoopStalledError, NodeFailureError, ServerReplyError
from .pipeline import (
    Discarded,
    ErrorReply,
    Line,
    Parser,
    ProtocolError,
    error_reply,
    line_end,
    value_length,
)

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

    # Each operation is a plain function handing back _run's coroutine: one coroutine per
    # operation instead of two or three (a session request makes one to three of them).

    def get(self, key: bytes) -> Coroutine[Any, Any, bytes | None]:
        _check_key(key)
        return self._run("get", b"get " + key + b"\r\n", _value_reply(key))

    def get_with_ttl(self, key: bytes) -> Coroutine[Any, Any, tuple[bytes, int] | None]:
        """The value and its remaining time to live in seconds (-1: none), one round trip
        (meta get); None on a miss."""
        _check_key(key)
        return self._run("get", b"mg " + key + b" v t k\r\n", _meta_reply(key))

    def set(self, key: bytes, value: bytes, exptime: int) -> Coroutine[Any, Any, bool]:
        return self._store(b"set", key, value, exptime)

    def add(self, key: bytes, value: bytes, exptime: int) -> Coroutine[Any, Any, bool]:
        """Store only if absent (the lock primitive); False when the key exists."""
        return self._store(b"add", key, value, exptime)

    def delete(self, key: bytes) -> Coroutine[Any, Any, bool]:
        _check_key(key)
        return self._run("delete", b"delete " + key + b"\r\n", _DELETE_REPLY)

    def touch(self, key: bytes, exptime: int) -> Coroutine[Any, Any, bool]:
        """Refresh the expiry without transferring the value; False when the key is gone."""
        _check_key(key)
        command = b"touch " + key + b" " + str(exptime).encode() + b"\r\n"
        return self._run("touch", command, _TOUCH_REPLY)

    def version(self) -> Coroutine[Any, Any, str]:
        return self._run("version", b"version\r\n", _version_reply)

    def stats(self) -> Coroutine[Any, Any, dict[str, str]]:
        """The general-purpose statistics (``stats``): name -> value as memcached sends it.
        (aiomcache's Client.stats() would hand a timed-out connection back, reply unread.)"""
        return self._run("stats", b"stats\r\n", _stats_reply)

    def _store(self, verb: bytes, key: bytes, value: bytes,
               exptime: int) -> Coroutine[Any, Any, bool]:
        _check_key(key)
        if exptime < 0:
            raise ValueError("negative exptime")
        command = b"%s %s 0 %d %d\r\n%s\r\n" % (verb, key, exptime, len(value), value)
        return self._run("set" if verb == b"set" else "add", command, _STORAGE_REPLY)

    # -- the choke point ----------------------------------------------------------------

    async def _run(self, operation: str, command: bytes, parse: Parser) -> _T:
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
                    future = line.send(command, parse, started + self.operation_timeout)
                    if len(command) > _DRAIN_ABOVE:
                        await line.drain()
                    result: _T = await future
                return result
            # The common case, a live connection and a small command: the line's one timer
            # bounds the wait (a timer per operation, even asyncio.timeout's, costs more
            # than the send).
            deadline = started + self.operation_timeout
            result = await line.send(command, parse, deadline)
            if loop.time() > deadline:
                # Parsed as it arrived, but after the bound (the loop was busy or stalled):
                # late is late, as if the timer had gone first.
                raise TimeoutError
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


def _retrieve(task: asyncio.Task[None]) -> None:
    """Mark a connect's failure as seen: the operations that waited for it may all have
    given up (timed out) before it ended."""
    if not task.cancelled():
        task.exception()


# -- the replies: each a Parser (pipeline.py) --------------------------------------------


def _replies(table: dict[bytes, bool]) -> Parser:
    """A one-line reply, one of `table`'s."""
    def parse(data: bytes | bytearray, pos: int) -> tuple[object, int] | None:
        end = line_end(data, pos)
        if end < 0:
            return None
        line = bytes(data[pos:end])
        outcome = table.get(line)
        return (error_reply(line) if outcome is None else outcome), end

    return parse


_STORAGE_REPLY = _replies(_STORAGE_REPLIES)
_DELETE_REPLY = _replies(_DELETE_REPLIES)
_TOUCH_REPLY = _replies(_TOUCH_REPLIES)


def _value_reply(key: bytes) -> Parser:
    """`get`: END, or VALUE <key> <flags> <length>, the value, END."""
    def parse(data: bytes | bytearray, pos: int) -> tuple[object, int] | None:
        end = line_end(data, pos)
        if end < 0:
            return None
        line = bytes(data[pos:end])
        if line == b"END\r\n":
            return None, end
        parts = line.split()
        if len(parts) != 4 or parts[0] != b"VALUE":
            return error_reply(line), end
        if parts[1] != key:
            raise ProtocolError(f"reply for {parts[1][:60]!r}, asked for {key[:60]!r}")
        stop = end + value_length(parts[3])
        if len(data) < stop + 7:
            return None
        if data[stop:stop + 7] != b"\r\nEND\r\n":
            raise ProtocolError("malformed VALUE reply")
        return bytes(data[end:stop]), stop + 7

    return parse


def _meta_reply(key: bytes) -> Parser:
    """`mg <key> v t k`: EN, or VA <length> t<ttl> k<key>, the value."""
    def parse(data: bytes | bytearray, pos: int) -> tuple[object, int] | None:
        end = line_end(data, pos)
        if end < 0:
            return None
        line = bytes(data[pos:end])
        parts = line.split()
        if parts and parts[0] == _META_MISS:
            return None, end
        if len(parts) != 4 or parts[0] != _META_VALUE or not parts[1].isdigit():
            return error_reply(line), end
        flags = {part[:1]: part[1:] for part in parts[2:]}
        if flags.get(b"k") != key:
            raise ProtocolError(f"meta reply for {line[:80]!r}, asked for {key[:60]!r}")
        try:
            ttl = int(flags[b"t"])
        except (KeyError, ValueError):
            raise ProtocolError(f"meta reply without a TTL: {line[:80]!r}") from None
        stop = end + value_length(parts[1])
        if len(data) < stop + 2:
            return None
        if data[stop:stop + 2] != b"\r\n":
            raise ProtocolError("malformed VA reply")
        return (bytes(data[end:stop]), ttl), stop + 2

    return parse


def _version_reply(data: bytes | bytearray, pos: int) -> tuple[object, int] | None:
    end = line_end(data, pos)
    if end < 0:
        return None
    line = bytes(data[pos:end])
    if not line.startswith(b"VERSION "):
        return error_reply(line), end
    return line[8:-2].decode("ascii", "replace"), end


def _stats_reply(data: bytes | bytearray, pos: int) -> tuple[object, int] | None:
    """STAT <name> <value> lines up to END (parsed again from the start until END is in)."""
    values: dict[str, str] = {}
    for _ in range(_MAX_STATS_LINES):
        end = line_end(data, pos)
        if end < 0:
            return None
        line = bytes(data[pos:end])
        if line == b"END\r\n":
            return values, end
        parts = line[:-2].split(b" ", 2)
        if len(parts) < 2 or parts[0] != b"STAT":
            return error_reply(line), end
        value = parts[2] if len(parts) == 3 else b""
        values[parts[1].decode("ascii", "replace")] = value.decode("ascii", "replace")
        pos = end
    raise ProtocolError(f"stats reply longer than {_MAX_STATS_LINES} lines")
