"""BackgroundTasks: the loops a SessionManager runs while it is open.

The expiry sweeper (sticky mode: local sessions idle past their max_inactive_interval go,
and their memcached copies with them), the evictions watch (every node's `stats`), and with
`memcached_nodes = "dns:NAME:PORT"` the discovery loop. `start` probes every node once and
resolves the name once (each bounded) before the loops begin; `stop` cancels them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

from .evictions import EvictionWatch
from .node_store import NodeStore
from .resolver import NodeDiscovery


class BackgroundTasks:
    def __init__(self, *, store: NodeStore, evictions: EvictionWatch,
                 discovery: NodeDiscovery | None, sweep: Callable[[], object] | None,
                 sweep_interval: float) -> None:
        self.store = store
        self.evictions = evictions
        self.discovery = discovery
        self.sweep = sweep  # None: nothing to sweep (non-sticky keeps nothing locally)
        self.sweep_interval = sweep_interval
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Probe every node (bounded by operation_timeout), resolve a dns: node list once
        (bounded), then start the loops. Idempotent."""
        if self._tasks:
            return

        async def probe(node: str) -> None:
            with contextlib.suppress(Exception):
                await self.store.call(node, "version", lambda client: client.version())

        await asyncio.gather(*(probe(node) for node in self.store.clients))
        if self.discovery is not None:
            await self.discovery.refresh()
            self._spawn(self.discovery.run())
        if self.sweep is not None:
            self._spawn(self._sweep())
        self._spawn(self.evictions.run())

    def _spawn(self, loop_coroutine: Coroutine[Any, Any, None]) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(loop_coroutine))

    async def _sweep(self) -> None:
        assert self.sweep is not None
        while True:
            await asyncio.sleep(self.sweep_interval)
            self.sweep()

    async def stop(self) -> None:
        """Cancel the loops and wait for them to end."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
