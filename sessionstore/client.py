"""The one memcached choke point: text protocol over aiomcache's connection pool.

Why not aiomcache's commands: aiomcache 0.8.2 has two traps.
1. Its ``@acquire`` only poisons the connection on ``Exception``; a timeout or cancel
   (``CancelledError``) hands the connection back with the old reply unread, and the next
   ``get`` on it reads that stale reply (a miss for a session that exists).
2. ``_execute_simple_command`` loops on ``readline()`` until a line ends in CRLF; at EOF
   ``readline()`` returns ``b''`` at once, forever, without yielding: the event loop freezes.

Here every operation runs under ``asyncio.timeout(operation_timeout)`` (connect included),
reads its reply with a reader that raises on EOF, checks that a ``VALUE`` reply names the key
asked for, and any exit other than a clean, complete reply closes the connection.

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

from aiomcache.pool import Connection, MemcachePool

from .errors import LoopStalledError, NodeFailureError, ServerReplyError

_T = TypeVar("_T")

_STORAGE_REPLIES = {b"STORED\r\n": True, b"NOT_STORED\r\n": False,
                    b"EXISTS\r\n": False, b"NOT_FOUND\r\n": False}
_DELETE_REPLIES = {b"DELETED\r\n": True, b"NOT_FOUND\r\n": False}
_TOUCH_REPLIES = {b"TOUCHED\r\n": True, b"NOT_FOUND\r\n": False}
_MAX_KEY_LENGTH = 250
_MAX_STATS_LINES = 512  # memcached 1.6 sends about 90; more is not a stats reply
_DRAIN_ABOVE = 64 * 1024


class _ProtocolError(Exception):
    """The byte stream is not a well-formed reply to what we sent (or it ended early)."""


class _ErrorReply(Exception):
    """A complete error line from the server (SERVER_ERROR, CLIENT_ERROR, ERROR)."""


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    line = await reader.readline()
    if not line.endswith(b"\r\n"):
        # b'' is EOF: raising here is what keeps a closed connection from spinning the loop.
        raise _ProtocolError("connection closed before the reply was complete")
    return line


_BAD_KEY_BYTE = re.compile(rb"[\x00-\x20\x7f]")


def _check_key(key: bytes) -> None:
    if not 0 < len(key) <= _MAX_KEY_LENGTH or _BAD_KEY_BYTE.search(key) is not None:
        raise ValueError(f"invalid memcached key {key[:60]!r}")


class MemcachedClient:
    """Pooled connections to one memcached node; every operation bounded and clean or closed."""

    def __init__(self, *, node: str, host: str, port: int, operation_timeout: float,
                 pool_size: int = 4) -> None:
        self.node = node
        self.host = host
        self.port = port
        self.operation_timeout = operation_timeout
        # minsize == maxsize: aiomcache's pool only grows to minsize under contention.
        self._pool = MemcachePool(host, port, minsize=pool_size, maxsize=pool_size)
        self._closed = False

    async def __aenter__(self) -> MemcachedClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every connection, idle or in use. Idempotent."""
        self._closed = True
        await self._pool.clear()
        for conn in list(self._pool._in_use):
            conn.writer.close()

    # -- operations ---------------------------------------------------------------------

    async def get(self, key: bytes) -> bytes | None:
        _check_key(key)

        async def read(reader: asyncio.StreamReader) -> bytes | None:
            line = await _read_line(reader)
            if line == b"END\r\n":
                return None
            parts = line.split()
            if len(parts) != 4 or parts[0] != b"VALUE":
                _raise_for(line)
            if parts[1] != key:
                raise _ProtocolError(f"reply for {parts[1][:60]!r}, asked for {key[:60]!r}")
            length = int(parts[3])
            data = await reader.readexactly(length + 2)
            if data[-2:] != b"\r\n" or await _read_line(reader) != b"END\r\n":
                raise _ProtocolError("malformed VALUE reply")
            return data[:-2]

        return await self._run("get", b"get " + key + b"\r\n", read)

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
            line = await _read_line(reader)
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
                line = await _read_line(reader)
                if line == b"END\r\n":
                    return values
                parts = line[:-2].split(b" ", 2)
                if len(parts) < 2 or parts[0] != b"STAT":
                    _raise_for(line)
                value = parts[2] if len(parts) == 3 else b""
                values[parts[1].decode("ascii", "replace")] = value.decode("ascii", "replace")
            raise _ProtocolError(f"stats reply longer than {_MAX_STATS_LINES} lines")

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
        conn: Connection | None = None
        clean = False
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with asyncio.timeout(self.operation_timeout):
                conn = await self._pool.acquire()
                conn.writer.write(command)
                if len(command) > _DRAIN_ABOVE:
                    await conn.writer.drain()
                result = await read(conn.reader)
            clean = True
            return result
        except TimeoutError:
            late = loop.time() - started - self.operation_timeout
            if late > self.operation_timeout:
                raise LoopStalledError(
                    self.node, operation, f"no reply read within {self.operation_timeout}s, "
                    f"with this process's event loop {late:.2f}s late") from None
            raise NodeFailureError(self.node, operation,
                                   f"no reply within {self.operation_timeout}s") from None
        except _ErrorReply as exc:
            raise ServerReplyError(self.node, operation, str(exc)) from None
        except (OSError, EOFError, _ProtocolError, ValueError) as exc:
            raise NodeFailureError(self.node, operation, str(exc) or type(exc).__name__) from None
        finally:
            if conn is not None:
                if not clean:
                    # Poison it so the pool closes it: its unread reply must never be read.
                    conn.reader.set_exception(ConnectionAbortedError("discarded"))
                self._pool.release(conn)


def _replies(table: dict[bytes, bool]) -> Callable[[asyncio.StreamReader], Awaitable[bool]]:
    async def read(reader: asyncio.StreamReader) -> bool:
        line = await _read_line(reader)
        outcome = table.get(line)
        if outcome is None:
            _raise_for(line)
        return bool(outcome)

    return read


def _raise_for(line: bytes) -> NoReturn:
    text = line.decode("ascii", "replace").strip()
    if text.startswith(("SERVER_ERROR", "CLIENT_ERROR", "ERROR")):
        raise _ErrorReply(text[:200])
    raise _ProtocolError(f"unexpected reply {text[:80]!r}")
