"""Read a real memcached's command counters, to prove what a request did or did not do."""

from __future__ import annotations

import asyncio

from tests.support.memcached import MemcachedProcess

COMMANDS = ("cmd_get", "cmd_set", "cmd_touch", "delete_hits", "delete_misses")


async def command_counts(server: MemcachedProcess) -> dict[str, int]:
    async with asyncio.timeout(5):
        reader, writer = await asyncio.open_connection(server.host, server.port)
        try:
            writer.write(b"stats\r\n")
            stats: dict[str, int] = {}
            while (line := await reader.readline()) not in (b"END\r\n", b""):
                _, name, value = line.decode().split()
                if name in COMMANDS:
                    stats[name] = int(value)
            return stats
        finally:
            writer.close()
            await writer.wait_closed()
