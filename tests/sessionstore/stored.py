"""Look into a real memcached the way an operator would: records, TTLs, server stats."""

from __future__ import annotations

import asyncio

from sessionstore.client import MemcachedClient
from sessionstore.codec import Attributes, Record, decode_record, transcoder_named


async def _exchange(port: int, command: bytes, end: bytes) -> bytes:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
    try:
        writer.write(command)
        return await asyncio.wait_for(reader.readuntil(end), 2)
    finally:
        writer.close()
        await writer.wait_closed()


async def raw_at(port: int, key: str) -> bytes:
    async with MemcachedClient(node="inspect", host="127.0.0.1", port=port,
                               operation_timeout=2.0, pool_size=1) as client:
        data = await client.get(key.encode())
    assert data is not None, f"{key} is not stored"
    return data


async def record_at(port: int, key: str, host: str = "127.0.0.1") -> Record | None:
    async with MemcachedClient(node="inspect", host=host, port=port,
                               operation_timeout=2.0, pool_size=1) as client:
        data = await client.get(key.encode())
    return decode_record(data) if data is not None else None


async def attributes_at(port: int, key: str, host: str = "127.0.0.1") -> Attributes | None:
    record = await record_at(port, key, host)
    if record is None:
        return None
    return transcoder_named(record.transcoder).decode(record.attributes_bytes)


async def ttl(port: int, key: str) -> int:
    """Remaining time to live in seconds (meta get `t` flag; -1 = never, -2 = missing)."""
    reply = await _exchange(port, b"mg " + key.encode() + b" t\r\n", b"\r\n")
    if reply.startswith(b"EN"):
        return -2
    return int(reply.split()[1][1:])


async def server_stat(port: int, name: str) -> int:
    reply = await _exchange(port, b"stats\r\n", b"END\r\n")
    for line in reply.decode().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == name:
            return int(parts[2])
    raise KeyError(name)


async def put(port: int, key: str, value: bytes, exptime: int = 60) -> None:
    async with MemcachedClient(node="inspect", host="127.0.0.1", port=port,
                               operation_timeout=2.0, pool_size=1) as client:
        await client.set(key.encode(), value, exptime)
