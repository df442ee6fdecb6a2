"""A peer that goes away mid-request (the proxy aborting its upstream connection, a client
resetting) is no error of the app server: no traceback, no 500 in the access log, nothing
stored; nginx's 499 says who left.
"""

from __future__ import annotations

import asyncio
import socket
import struct

import aiohttp
import pytest

from .processes import KEPT, AppServerProcess, attributes, new_session

DECLARED_LENGTH = 100_000
URLENCODED = b"application/x-www-form-urlencoded"
MULTIPART = b"multipart/form-data; boundary=b0undary"
BODY_STARTS = {
    URLENCODED: b"dataName=aborted&dataValue=" + b"x" * 2000,
    MULTIPART: b'--b0undary\r\nContent-Disposition: form-data; name="dataName"\r\n\r\n'
    + b"x" * 2000,
}


def head(tag: str, content_type: bytes, session_id: str) -> bytes:
    return (
        b"POST /test HTTP/1.1\r\nHost: app1\r\nAccept: application/json\r\n"
        b"User-Agent: " + tag.encode() + b"\r\nContent-Type: " + content_type + b"\r\n"
        b"Cookie: JSESSIONID=" + session_id.encode() + b"\r\n"
        b"Content-Length: %d\r\n\r\n" % DECLARED_LENGTH
    )


async def health_round_trip(server: AppServerProcess) -> None:
    """A full exchange on another connection: by its end the server has read what the
    aborted connection sent before it went."""
    async with aiohttp.ClientSession() as client, client.get(server.url("/health")) as response:
        assert response.status == 200


async def send_then_leave(server: AppServerProcess, data: bytes, *, reset: bool) -> None:
    """`data`, a round trip so the handler is reading the body, then a close (FIN) or, with
    SO_LINGER 0, a reset (RST)."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    try:
        sock.sendall(data)
        await health_round_trip(server)
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        sock.close()


@pytest.mark.parametrize("reset", [False, True], ids=["close", "reset"])
@pytest.mark.parametrize("content_type", [URLENCODED, MULTIPART], ids=["urlencoded", "multipart"])
async def test_a_peer_leaving_mid_body_is_no_server_error(
    logged_appserver: AppServerProcess, content_type: bytes, reset: bool
) -> None:
    server = logged_appserver
    tag = f"aborted-{content_type.split(b';')[0].decode()}-{'reset' if reset else 'close'}"
    async with asyncio.timeout(20):
        session_id = await new_session(server, tag)
        since = server.log_size()
        data = head(tag, content_type, session_id) + BODY_STARTS[content_type]
        await send_then_leave(server, data, reset=reset)
        log = server.log_until(f'"{tag}"', since=since)
        assert await attributes(server, tag, session_id) == KEPT  # still serving, no change
    assert "Traceback" not in log and "ERROR" not in log, log
    assert '"POST /test HTTP/1.1" 499 ' in log.splitlines()[-1], log
    assert " 500 " not in log, log


async def test_a_peer_leaving_before_the_body_is_no_server_error(
    logged_appserver: AppServerProcess,
) -> None:
    """Only the head, then a reset: the handler meets the lost connection on its first read."""
    server, tag = logged_appserver, "aborted-head-only"
    async with asyncio.timeout(20):
        session_id = await new_session(server, tag)
        since = server.log_size()
        await send_then_leave(server, head(tag, URLENCODED, session_id), reset=True)
        log = server.log_until(f'"{tag}"', since=since)
    assert "Traceback" not in log and "ERROR" not in log, log
    assert '"POST /test HTTP/1.1" 499 ' in log.splitlines()[-1], log
