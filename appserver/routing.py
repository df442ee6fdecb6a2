"""The routes of one app server, each served through one wrapper (request tracking and the
session middleware: traffic.RequestTracker.wrap) instead of aiohttp middlewares.

A request that matches no route still gets what aiohttp's router answers, 404 or a 405 with
Allow, from a last catch-all route, so that it too is counted and carries its request id.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler


class TrackedRoutes:
    """Adds routes to `router` with every handler passed through `wrap`."""

    def __init__(self, router: web.UrlDispatcher, wrap: Callable[[Handler], Handler]) -> None:
        self._router = router
        self._wrap = wrap

    def get(self, path: str, handler: Handler) -> None:
        self._router.add_get(path, self._wrap(handler))

    def post(self, path: str, handler: Handler) -> None:
        self._router.add_post(path, self._wrap(handler))

    def add_no_route(self) -> None:
        """The last route: everything no other route takes, answered as aiohttp would."""
        router = self._router
        fallback = router.add_resource("/{path:.*}")

        async def no_route(request: web.Request) -> web.StreamResponse:
            allowed: set[str] = set()
            for resource in router.resources():
                if resource is not fallback:
                    _, methods = await resource.resolve(request)
                    allowed |= methods
            if allowed:
                raise web.HTTPMethodNotAllowed(request.method, allowed)
            raise web.HTTPNotFound()

        fallback.add_route("*", self._wrap(no_route))
