"""RequestTracker: responses by method and status, and the requests in flight.

One outermost middleware does both, because per request we can afford a dict add and two
int updates but not a second middleware layer. The in-flight count is what graceful
shutdown waits on: aiohttp's own shutdown stops reading from every connection at once, so
a request whose body is still arriving would never complete.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from aiohttp import web
from aiohttp.typedefs import Handler

# Any other method is counted as OTHER, so garbage cannot grow the label set.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})


class RequestTracker:
    def __init__(self) -> None:
        self.by_method_status: Counter[tuple[str, int]] = Counter()
        self.in_flight = 0
        self.draining = False
        self._idle: asyncio.Event | None = None

    async def drain(self) -> None:
        """Stop keeping connections alive, then wait until no request is in flight.

        The caller bounds the wait (asyncio.timeout).
        """
        self.draining = True
        if self.in_flight:
            self._idle = asyncio.Event()
            await self._idle.wait()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        method = request.method if request.method in _METHODS else "OTHER"
        self.in_flight += 1
        try:
            response: web.StreamResponse = await handler(request)
        except web.HTTPException as exc:
            self.by_method_status[method, exc.status] += 1
            raise
        except Exception:
            self.by_method_status[method, 500] += 1
            raise
        finally:
            self.in_flight -= 1
            if self.in_flight == 0 and self._idle is not None:
                self._idle.set()
        self.by_method_status[method, response.status] += 1
        if self.draining and not response.prepared:
            response.force_close()  # no further request on this connection
        return response
