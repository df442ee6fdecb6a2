"""An app written against aiohttp-session's API, with sessionstore behind it.

    MEMCACHED_NODES=n1:127.0.0.1:21211,n2:127.0.0.1:21212 JVM_ROUTE=app1 \
        LISTEN=127.0.0.1:8091 .venv/bin/python examples/with_aiohttp_session.py

Its handlers only know `aiohttp_session`: `get_session`, `new_session`, `invalidate()`. The
two lines in `make_app` are the whole switch from aiohttp-session's own storages to
sessionstore's sticky or non-sticky sessions with crosswise backup and failover. Needs the
extra: `pip install 'sessionha[aiohttp-session]'`.

GET / shows the cart and the user as JSON; POST /cart (form field `item`) adds to the cart;
POST /login (field `username`) signs in under a new session; POST /logout ends it.
Settings come from the environment (LISTEN, JVM_ROUTE, MEMCACHED_NODES, FAILOVER_NODES,
STICKY, ...: any sessionstore key in upper case).
"""

from __future__ import annotations

import dataclasses
import os

import aiohttp_session
from aiohttp import web

from sessionstore import SessionStoreSettings
from sessionstore.aiohttp_session import MemcachedHAStorage


async def show(request: web.Request) -> web.Response:
    session = await aiohttp_session.get_session(request)
    return web.json_response(
        {
            "server": request.app[ROUTE],
            "session_id": session.identity,
            "new": session.new,
            "user": session.get("user"),
            "cart": session.get("cart", []),
        }
    )


async def add_to_cart(request: web.Request) -> web.Response:
    item = (await request.post()).get("item")
    if not isinstance(item, str) or not item:
        return web.Response(status=400, text="item is required\n")
    session = await aiohttp_session.get_session(request)
    session["cart"] = [*session.get("cart", []), item]
    return await show(request)


async def login(request: web.Request) -> web.Response:
    name = (await request.post()).get("username")
    if not isinstance(name, str) or not name:
        return web.Response(status=400, text="username is required\n")
    cart = (await aiohttp_session.get_session(request)).get("cart", [])
    session = await aiohttp_session.new_session(request)  # a new id for the signed-in user
    session["user"] = name
    session["cart"] = cart
    raise web.HTTPSeeOther("/")


async def logout(request: web.Request) -> web.Response:
    (await aiohttp_session.get_session(request)).invalidate()
    raise web.HTTPSeeOther("/")


ROUTE = web.AppKey("route", str)


def make_app(settings: SessionStoreSettings) -> web.Application:
    app = web.Application()
    app[ROUTE] = settings.jvm_route
    storage = MemcachedHAStorage(settings)
    aiohttp_session.setup(app, storage)
    app.cleanup_ctx.append(storage.cleanup_ctx)  # optional: closed cleanly with the app
    app.router.add_get("/", show)
    app.router.add_post("/cart", add_to_cart)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    return app


def settings_from_environ() -> SessionStoreSettings:
    keys = (field.name for field in dataclasses.fields(SessionStoreSettings))
    values = {key: os.environ[key.upper()] for key in keys if os.environ.get(key.upper())}
    return SessionStoreSettings.from_mapping(values)


if __name__ == "__main__":
    host, _, port = os.environ.get("LISTEN", "127.0.0.1:8091").rpartition(":")
    web.run_app(make_app(settings_from_environ()), host=host, port=int(port), print=None)
