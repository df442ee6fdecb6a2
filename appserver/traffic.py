"""RequestTracker: responses by method and status, their durations, the requests in flight,
and each request's id.

One wrapper around every route's handler does all of it, and it calls sessionstore's
session middleware itself (`inner`): per request we can afford a dict add, a bucket count, a
header and two int updates, but not aiohttp's middleware machinery, which costs about a
twentieth of a small request for its first layer alone. The in-flight count is what graceful
shutdown waits on: aiohttp's own shutdown stops reading from every connection at once, so a
request whose body is still arriving would never complete.

The request id: the proxy sends `X-Request-ID` on every request it forwards; from a peer in
trusted_proxies (the peers whose X-Forwarded-For is believed) a well-formed one is kept,
anything else gets an id of our own (32 hex digits, like nginx's $request_id). The access
log shows it either way; the response carries it back only when it is our own, since the
proxy returns the ids it gives (a second, identical header would also make every answer's
head unique, which spares the proxy's lean path nothing).
"""

from __future__ import annotations

import asyncio
import re
from bisect import bisect_left
from collections import Counter
from random import getrandbits
from time import perf_counter

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from multidict import istr

from sessionstore.client_address import TrustedProxies

REQUEST_ID = istr("X-Request-ID")  # an istr: the header dicts need not convert it each time
# Where the id waits for the access log when the response cannot carry it: the 500 aiohttp
# makes after a handler's exception, or a response the handler streamed itself.
REQUEST_ID_KEY = web.RequestKey("appserver_request_id", str)
# Printable ASCII but space, quote and backslash: it goes into log lines unquoted and unescaped.
_WELL_FORMED_ID = re.compile(r"[!#-\[\]-~]{1,128}")

# Any other method is counted as OTHER, so garbage cannot grow the label set.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})
# Upper bounds (seconds) of the request duration histogram: a page from memory takes well
# under a millisecond, one waiting for its backup a few, one waiting for a lock up to seconds.
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                    2.5, 5.0, 10.0)


class RequestTracker:
    def __init__(self, *, trusted: TrustedProxies, inner: Middleware) -> None:
        self.trusted = trusted
        self.inner = inner  # what runs between this and the handler (the session middleware)
        self.by_method_status: Counter[tuple[str, int]] = Counter()
        # Requests per duration bucket (not cumulative; the last one: above every bound).
        self.duration_counts = [0] * (len(DURATION_BUCKETS) + 1)
        self.duration_total = 0.0
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

    def request_id(self, request: web.BaseRequest) -> str | None:
        """The proxy's id for this request if we believe it, else None (we make one)."""
        given = request.headers.get(REQUEST_ID)
        if given is not None and _WELL_FORMED_ID.fullmatch(given) is not None:
            peer = request.remote
            if peer is not None and self.trusted.trusts_peer(peer):
                return given
        return None

    def _done(self, method: str, status: int, started: float) -> None:
        self.by_method_status[method, status] += 1
        seconds = perf_counter() - started
        self.duration_counts[bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.duration_total += seconds

    def wrap(self, handler: Handler) -> Handler:
        """`handler` tracked, with the session middleware (`inner`) inside: what every route
        of the app serves (create_app), so no aiohttp middleware layer is needed."""
        inner = self.inner

        async def tracked(request: web.Request) -> web.StreamResponse:
            method = request.method
            if method not in _METHODS:
                method = "OTHER"
            given = self.request_id(request) if REQUEST_ID in request.headers else None
            # Else 32 hex digits: unique enough to follow a request through the logs, not a
            # secret, so the cheap generator will do (twice as fast as f"{n:032x}").
            request_id = getrandbits(128).to_bytes(16, "big").hex() if given is None else given
            self.in_flight += 1
            started = perf_counter()
            try:
                response: web.StreamResponse = await inner(request, handler)
            except web.HTTPException as exc:
                self._done(method, exc.status, started)
                if given is None:  # the exception is the response aiohttp sends
                    exc.headers[REQUEST_ID] = request_id
                else:
                    request[REQUEST_ID_KEY] = request_id
                raise
            except Exception:
                self._done(method, 500, started)
                request[REQUEST_ID_KEY] = request_id
                raise
            finally:
                self.in_flight -= 1
                if self.in_flight == 0 and self._idle is not None:
                    self._idle.set()
            # _done inlined: this is the path of nearly every request.
            seconds = perf_counter() - started
            self.by_method_status[method, response.status] += 1
            self.duration_counts[bisect_left(DURATION_BUCKETS, seconds)] += 1
            self.duration_total += seconds
            if not response.prepared and given is None:  # a streamed one has sent its headers
                response.headers[REQUEST_ID] = request_id
            else:
                request[REQUEST_ID_KEY] = request_id
            if self.draining and not response.prepared:
                response.force_close()  # no further request on this connection
            return response

        return tracked
