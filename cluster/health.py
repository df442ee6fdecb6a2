"""Health probes with timeouts: memcached `version`, app `/health`, proxy status JSON."""

from __future__ import annotations

import asyncio
import contextlib

from .topology import Member

PROBE_TIMEOUT = 1.0


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


HEALTH_PATHS = {"appserver": "/health", "proxy": "/_proxy/status.json"}


async def memcached_answers(host: str, port: int, *, within: float = PROBE_TIMEOUT) -> bool:
    """True when memcached accepts a connection and answers `version`."""
    try:
        async with asyncio.timeout(within):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(b"version\r\n")
                await writer.drain()
                line = await reader.readline()
            finally:
                await _close(writer)
    except (OSError, TimeoutError):
        return False
    return line.startswith(b"VERSION ")


async def http_status(host: str, port: int, path: str, *, within: float = PROBE_TIMEOUT) -> int:
    """Status code of a plain GET, or 0 when nothing answered in time."""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n"
        "User-Agent: sessionha-launcher\r\n\r\n"
    ).encode("ascii")
    try:
        async with asyncio.timeout(within):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(request)
                await writer.drain()
                status_line = await reader.readline()
            finally:
                await _close(writer)
    except (OSError, TimeoutError):
        return 0
    parts = status_line.split()
    return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else 0


async def is_healthy(member: Member) -> bool:
    host, port = member.listen.connect_host, member.listen.port
    if member.role == "memcached":
        return await memcached_answers(host, port)
    return await http_status(host, port, HEALTH_PATHS[member.role]) == 200
