"""A small aiohttp app with the session manager installed, as the app server uses it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiohttp import web

import sessionstore
from sessionstore import SessionStoreSettings, build_manager, encode_url, get_session
from sessionstore.resolver import Resolver


def settings_for(*nodes: str, **overrides: object) -> SessionStoreSettings:
    """Settings for memcached `nodes` given as "host:port" (ids n1, n2, ...)."""
    values: dict[str, object] = {
        "jvm_route": "app1",
        "memcached_nodes": ",".join(f"n{i}:{address}" for i, address in enumerate(nodes, 1)),
    }
    values.update(overrides)
    return SessionStoreSettings.from_mapping(values)


async def show(request: web.Request) -> web.Response:
    session = await get_session(request)
    return web.json_response({"id": session.id, "new": session.new,
                              "attributes": dict(session),
                              "link": encode_url(request, "/test?x=1")})


async def put(request: web.Request) -> web.Response:
    session = await get_session(request)
    for name, value in request.query.items():
        session[name] = value
    return web.json_response({"id": session.id, "attributes": dict(session)})


async def increment(request: web.Request) -> web.Response:
    session = await get_session(request)
    count = session.get("count", 0)
    await asyncio.sleep(0.005)  # widen the read-modify-write window
    assert isinstance(count, int)
    session["count"] = count + 1
    return web.json_response({"count": count + 1})


async def invalidate(request: web.Request) -> web.Response:
    session = await get_session(request)
    session.invalidate()
    return web.Response(text="bye")


async def rotate(request: web.Request) -> web.Response:
    """Log-in style: the old session ends, a new one carries on in the same request."""
    (await get_session(request)).invalidate()
    session = await get_session(request)
    session["rotated"] = True
    return web.json_response({"id": session.id})


async def untouched(request: web.Request) -> web.Response:
    return web.Response(text="no session")


async def big(request: web.Request) -> web.Response:
    session = await get_session(request)
    session["blob"] = "x" * int(request.query["size"])
    return web.Response(text="stored")


async def redirect(request: web.Request) -> web.Response:
    session = await get_session(request)
    session["before_redirect"] = True
    raise web.HTTPFound("/show")


async def append(request: web.Request) -> web.Response:
    session = await get_session(request)
    items = session.setdefault("items", [])
    assert isinstance(items, list)
    items.append(request.query["item"])
    return web.json_response({"id": session.id, "attributes": dict(session)})


async def store_object(request: web.Request) -> web.Response:
    session = await get_session(request)
    try:
        session["thing"] = {"when": object()}  # type: ignore[dict-item]
    except sessionstore.UnstorableValueError as exc:
        return web.Response(status=400, text=str(exc))
    return web.Response(text="stored?!")


async def stream(request: web.Request) -> web.StreamResponse:
    session = await get_session(request)
    session["streamed"] = True
    response = web.StreamResponse()
    await response.prepare(request)
    await response.write(b"streamed")
    return response


def make_app(settings: SessionStoreSettings,
             clock: Callable[[], float] | None = None,
             resolver: Resolver | None = None) -> web.Application:
    app = web.Application()
    manager = None
    if clock is not None or resolver is not None:
        manager = build_manager(settings=settings, clock=clock or time.time, resolver=resolver)
    sessionstore.setup(app, settings, manager=manager)
    app.router.add_get("/show", show)
    app.router.add_get("/put", put)
    app.router.add_post("/put", put)
    app.router.add_get("/increment", increment)
    app.router.add_post("/increment", increment)
    app.router.add_get("/invalidate", invalidate)
    app.router.add_get("/rotate", rotate)
    app.router.add_get("/untouched", untouched)
    app.router.add_get("/big", big)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/logo.png", show)
    app.router.add_get("/append", append)
    app.router.add_get("/object", store_object)
    app.router.add_get("/stream", stream)
    app.router.add_get(r"/show{params:;[^/]*}", show)
    return app


class Clock:
    """Injected time: tests move it instead of sleeping."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
