"""sessionstore's own API in an aiohttp app: sessions in memcached, backed up crosswise.

    MEMCACHED_NODES=n1:127.0.0.1:21211,n2:127.0.0.1:21212 JVM_ROUTE=app1 \
        LISTEN=127.0.0.1:8090 .venv/bin/python examples/native.py

GET / counts visits in the session and shows it as JSON; POST /login (form field
`username`) signs in under a new session id; POST /logout ends the session. Settings come
from the environment as `python -m appserver` takes them (LISTEN, JVM_ROUTE,
MEMCACHED_NODES, FAILOVER_NODES, STICKY, ...: any sessionstore key in upper case).
"""

from __future__ import annotations

import dataclasses
import os

from aiohttp import web

import sessionstore


async def page(request: web.Request) -> web.Response:
    session = await sessionstore.get_session(request)
    visits = session.get("visits", 0)
    session["visits"] = visits + 1 if isinstance(visits, int) else 1
    return web.json_response(
        {"session_id": session.id, "visits": session["visits"], "user": session.get("user")}
    )


async def login(request: web.Request) -> web.Response:
    name = (await request.post()).get("username")
    if not isinstance(name, str) or not name:
        return web.Response(status=400, text="username is required\n")
    session = await sessionstore.get_session(request)
    session.rotate_id()  # a new id once signed in: an id known before is worth nothing now
    session["user"] = name
    raise web.HTTPSeeOther(sessionstore.encode_url(request, "/"))


async def logout(request: web.Request) -> web.Response:
    (await sessionstore.get_session(request)).invalidate()  # the cookie goes too
    raise web.HTTPSeeOther("/")


def make_app(settings: sessionstore.SessionStoreSettings) -> web.Application:
    app = web.Application()
    sessionstore.setup(app, settings)
    app.router.add_get("/", page)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    return app


def settings_from_environ() -> sessionstore.SessionStoreSettings:
    keys = (field.name for field in dataclasses.fields(sessionstore.SessionStoreSettings))
    values = {key: os.environ[key.upper()] for key in keys if os.environ.get(key.upper())}
    return sessionstore.SessionStoreSettings.from_mapping(values)


if __name__ == "__main__":
    host, _, port = os.environ.get("LISTEN", "127.0.0.1:8090").rpartition(":")
    web.run_app(make_app(settings_from_environ()), host=host, port=int(port), print=None)
