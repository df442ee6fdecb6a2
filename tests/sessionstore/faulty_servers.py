"""TCP servers that fail the way real networks and memcached do, owned by one test each.

They run in a thread with blocking sockets, so they keep working (and the test can be timed
out) even if the event loop under test froze. Bound to 127.0.0.1 on a free port; `close()`
(or leaving the `with` block) stops them.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from types import TracebackType
from typing import Self

from tests.support.ports import free_port


class _ThreadedServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.1)
        self._stop = threading.Event()
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()
        self.received = bytearray()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()
        with self._lock:
            for conn in self._connections:
                conn.close()

    def _accept_loop(self) -> None:
        workers: list[threading.Thread] = []
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            conn.settimeout(0.1)
            with self._lock:
                self._connections.append(conn)
            worker = threading.Thread(target=self._serve_safely, args=(conn,), daemon=True)
            worker.start()
            workers.append(worker)
        for worker in workers:
            worker.join(timeout=5)

    def _serve_safely(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            self.serve(conn)

    def _recv(self, conn: socket.socket) -> bytes | None:
        """Bytes from the client; b'' when it closed; None when the server is stopping."""
        while not self._stop.is_set():
            try:
                data = conn.recv(65536)
            except TimeoutError:
                continue
            with self._lock:
                self.received.extend(data)
            return data
        return None

    @property
    def connections_accepted(self) -> int:
        with self._lock:
            return len(self._connections)

    def serve(self, conn: socket.socket) -> None:
        raise NotImplementedError


class SilentServer(_ThreadedServer):
    """Accepts connections, reads everything, never answers (a hung or black-holed node)."""

    def serve(self, conn: socket.socket) -> None:
        while self._recv(conn):
            pass


class CloseMidCommandServer(_ThreadedServer):
    """Reads a command up to its first line end, then closes without replying (memcached
    dying between reading a storage command and answering it)."""

    def serve(self, conn: socket.socket) -> None:
        buffer = b""
        while b"\r\n" not in buffer:
            data = self._recv(conn)
            if not data:
                return
            buffer += data
        conn.shutdown(socket.SHUT_RDWR)
        conn.close()


class DelayingProxy(_ThreadedServer):
    """Forwards to a real memcached; replies are held back `reply_delay` seconds (settable
    while running), as a congested network does. Order on each connection is kept."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.reply_delay = 0.0
        self.replies_forwarded = 0  # chunks passed on to clients, delayed or not
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
        upstream.settimeout(0.1)
        pump = threading.Thread(target=self._replies, args=(upstream, conn), daemon=True)
        pump.start()
        try:
            while True:
                data = self._recv(conn)
                if not data:
                    break
                upstream.sendall(data)
        finally:
            upstream.close()
            pump.join(timeout=5)

    def _replies(self, upstream: socket.socket, conn: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                data = upstream.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            delay = self.reply_delay
            if delay:
                time.sleep(delay)
            try:
                conn.sendall(data)
            except OSError:
                return
            finally:
                with self._lock:
                    self.replies_forwarded += 1


async def wait_until_forwarded(proxy: DelayingProxy, count: int, within: float = 5.0) -> None:
    """Wait (bounded) until the proxy has passed on `count` reply chunks in all."""
    deadline = time.monotonic() + within
    while proxy.replies_forwarded < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"proxy forwarded {proxy.replies_forwarded} of {count} replies")
        await asyncio.sleep(0.01)


class WrongReplyServer(_ThreadedServer):
    """Answers every command line with `reply` (a reply that does not fit the command: for
    another key, say), as a desynchronised connection would."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        buffer = b""
        while (data := self._recv(conn)):
            buffer += data
            while b"\r\n" in buffer:
                _, buffer = buffer.split(b"\r\n", 1)
                conn.sendall(self.reply)
