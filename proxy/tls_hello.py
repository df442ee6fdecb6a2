"""The first record of a connection to a `listen ... ssl` port, judged before the event
loop's own TLS (uvloop's, or asyncio's) takes the socket over.

Looking first, with MSG_PEEK so that OpenSSL still reads every byte, lets the port do
what nginx does and CPython's ssl module does not:
- plain HTTP (a first byte that cannot start a TLS record) gets a `400` saying so, then
  the connection is closed; nothing of it is forwarded;
- a ClientHello whose ALPN list lacks `http/1.1` gets the fatal `no_application_protocol`
  alert (OpenSSL would just carry on without ALPN);
- a client that sends no complete first record within `hello_timeout` is closed.
Waiting for the rest of a record sets SO_RCVLOWAT to its length, so the loop is woken
once when it is all there instead of once per segment.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import socket
from collections.abc import Callable

from proxy.tls import ALPN, offered_alpn

_HANDSHAKE = 0x16
_RECORD_MAX = 5 + 2**14  # a record header and the largest plaintext fragment
_ALERT_NO_APPLICATION_PROTOCOL = bytes((0x15, 3, 3, 0, 2, 2, 120))  # fatal, RFC 7301
_PLAIN_BODY = (
    b"<html>\r\n<head><title>400 The plain HTTP request was sent to HTTPS port</title></head>\r\n"
    b"<body>\r\n<center><h1>400 Bad Request</h1></center>\r\n"
    b"<center>The plain HTTP request was sent to HTTPS port</center>\r\n</body>\r\n</html>\r\n"
)
_LINGER = 1.0  # how long a refused plain client may take to read the 400 and hang up
_RETRY = 0.05  # re-peek delay when woken with nothing new (SO_RCVLOWAT not honoured, or EOF)


def plain_http_response() -> bytes:
    """nginx's answer to plain HTTP on an ssl port (its status 497, sent as 400)."""
    return (
        b"HTTP/1.1 400 Bad Request\r\nDate: %s\r\nContent-Type: text/html\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
        % (email.utils.formatdate(usegmt=True).encode(), len(_PLAIN_BODY), _PLAIN_BODY)
    )


class _Hello:
    """One accepted connection whose first record has not been judged yet."""

    __slots__ = ("deadline", "lowat", "reading", "seen", "sock", "timer")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.timer: asyncio.TimerHandle | None = None
        self.reading = False
        self.seen = -1  # bytes peeked at the last look, -1 for none
        self.lowat = 1


class HelloGate:
    """Holds accepted sockets until their first record is judged: a TLS one goes to
    `hand_off(sock)`, anything else is answered (plain HTTP, h2-only ALPN) or dropped."""

    def __init__(self, hand_off: Callable[[socket.socket], None], *, hello_timeout: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._hand_off_to = hand_off
        self._hello_timeout = hello_timeout
        self._peek = bytearray(_RECORD_MAX)  # one buffer: callbacks never interleave
        self._hellos: set[_Hello] = set()
        self._lingering: dict[socket.socket, asyncio.TimerHandle] = {}

    def admit(self, sock: socket.socket) -> None:
        """A newly accepted (non-blocking) socket."""
        hello = _Hello(sock, self._loop.time() + self._hello_timeout)
        self._hellos.add(hello)
        self._look(hello)

    def close(self) -> None:
        """Drop every socket still waiting or lingering."""
        for hello in list(self._hellos):
            self._drop(hello)
        for sock in list(self._lingering):
            self._end_linger(sock)

    def _look(self, hello: _Hello) -> None:
        """Judge the first record if it is all there, else wait for more of it."""
        peek = self._peek
        try:
            got = hello.sock.recv_into(peek, _RECORD_MAX, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            got = -1
        except OSError:
            self._drop(hello)
            return
        need = 5
        if got == 0:
            self._drop(hello)  # gone before saying anything
            return
        if got > 0:
            if peek[0] != _HANDSHAKE:
                # A plain request starts with a token character; 0x80 and up is an
                # SSLv2-style hello, which OpenSSL judges.
                if peek[0] & 0x80:
                    self._hand_off(hello)
                else:
                    self._refuse_plain(hello)
                return
            if got >= 5:
                need = 5 + (peek[3] << 8 | peek[4])
                if need > _RECORD_MAX:
                    self._hand_off(hello)  # oversized: OpenSSL sends the alert
                    return
                if got >= need:
                    names = offered_alpn(memoryview(peek)[:need])
                    if names is None or ALPN.encode() in names:
                        self._hand_off(hello)
                    else:
                        self._refuse_alpn(hello, need)
                    return
        self._wait(hello, got, need)

    def _wait(self, hello: _Hello, got: int, need: int) -> None:
        fd = hello.sock.fileno()
        if hello.timer is None:
            hello.timer = self._loop.call_at(hello.deadline, self._drop, hello)
        if hello.reading and got == hello.seen:
            # Woken with nothing new: look again a little later rather than spin.
            self._loop.remove_reader(fd)
            hello.reading = False
            self._loop.call_later(_RETRY, self._rearm, hello)
            return
        hello.seen = got
        if got > 0 and need != hello.lowat:
            with contextlib.suppress(OSError):  # unsupported: the retry path still works
                hello.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, need)
                hello.lowat = need
        if not hello.reading:
            self._loop.add_reader(fd, self._look, hello)
            hello.reading = True

    def _rearm(self, hello: _Hello) -> None:
        if hello in self._hellos and not hello.reading:
            self._loop.add_reader(hello.sock.fileno(), self._look, hello)
            hello.reading = True

    def _forget(self, hello: _Hello) -> socket.socket:
        self._hellos.discard(hello)
        if hello.reading:
            self._loop.remove_reader(hello.sock.fileno())
            hello.reading = False
        if hello.timer is not None:
            hello.timer.cancel()
        return hello.sock

    def _drop(self, hello: _Hello) -> None:
        sock = self._forget(hello)
        if hello.seen > 0:
            with contextlib.suppress(OSError):
                _drain(sock)  # the peeked bytes: so that close() sends FIN, not RST
        sock.close()

    def _hand_off(self, hello: _Hello) -> None:
        sock = self._forget(hello)
        if hello.lowat != 1:
            with contextlib.suppress(OSError):  # a reset socket: the handshake will say so
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
        self._hand_off_to(sock)

    def _refuse_alpn(self, hello: _Hello, need: int) -> None:
        sock = self._forget(hello)
        try:
            sock.recv(need)  # read the hello, so that closing sends FIN, not RST over the alert
            sock.send(_ALERT_NO_APPLICATION_PROTOCOL)
        except OSError:
            pass
        sock.close()

    def _refuse_plain(self, hello: _Hello) -> None:
        sock = self._forget(hello)
        try:
            _drain(sock)
            sock.send(plain_http_response())
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            sock.close()
            return
        # Unread bytes at close() would make the kernel reset the connection, which can
        # destroy the 400 before the client reads it: read until the client hangs up.
        self._lingering[sock] = self._loop.call_later(_LINGER, self._end_linger, sock)
        self._loop.add_reader(sock.fileno(), self._linger, sock)

    def _linger(self, sock: socket.socket) -> None:
        try:
            if _drain(sock):
                return
        except OSError:
            pass
        self._end_linger(sock)

    def _end_linger(self, sock: socket.socket) -> None:
        self._loop.remove_reader(sock.fileno())
        self._lingering.pop(sock).cancel()
        sock.close()


def _drain(sock: socket.socket) -> bool:
    """Read what has arrived; False once the client has hung up."""
    for _ in range(16):
        try:
            if not sock.recv(65536):
                return False
        except (BlockingIOError, InterruptedError):
            return True
    return True
