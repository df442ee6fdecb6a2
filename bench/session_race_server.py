"""One server of bench/session_race.py: the same small session page, one way of keeping sessions.

    .venv/bin/python bench/session_race_server.py VARIANT PORT [HOST:PORT,...]

VARIANT is `bare` (sessions in a dict in this process), `bare-page` (the same, rendering
the app server's own /test page: the reference for `python -m appserver`), `aiohttp-session` (its
MemcachedStorage on aiomcache, first memcached address), `adapter` (the same aiohttp-session
handler on sessionstore's MemcachedHAStorage, sticky, node n1 on the first address), `sticky`
(sessionstore, node n1 on the first address) or `non-sticky` (sessionstore, nodes n1 and n2
on the first two addresses: each session has a `bak:` copy on the other node). Every
variant answers `GET /test` with the session's attributes and `POST /test` (form fields
`dataName`, `dataValue`) by setting one attribute first, under the cookie `JSESSIONID`.
One process, uvloop, no access log; it runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import gc
import logging
import secrets
import sys
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterable, MutableMapping
from html import escape
from pathlib import Path
from typing import Any

import aiohttp_session
import aiomcache
import uvloop
from aiohttp import web
from aiohttp_session.memcached_storage import MemcachedStorage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sessionstore
from appserver.pages import DemoPage, SessionView
from appserver.static import asset_url, load_assets
from sessionstore.aiohttp_session import MemcachedHAStorage

VARIANTS = ("bare", "bare-page", "aiohttp-session", "adapter", "sticky", "non-sticky")
COOKIE = "JSESSIONID"
MAX_INACTIVE_INTERVAL = 1800
# aiomcache's default pool is 2 connections; sessionstore's client keeps 4 per node.
AIOMCACHE_POOL_SIZE = 4

_HEAD = (
    '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
    "<title>Session test</title>\n</head>\n<body>\n<main>\n<h1>Session test</h1>\n"
)
_FORM = (
    '<form method="POST" action="/test">\n'
    '<label>Name <input type="text" size="20" name="dataName" required></label>\n'
    '<label>Value <input type="text" size="20" name="dataValue"></label>\n'
    '<button type="submit">Add to session</button>\n</form>\n</main>\n</body>\n</html>\n'
)


def page(session_id: str, new: bool, attributes: Iterable[tuple[str, object]]) -> web.Response:
    """The page every variant renders: the session id and its attributes, escaped."""
    rows = "".join(
        f"<li>{escape(name)} = {escape(str(value))}</li>\n" for name, value in attributes
    )
    state = "new" if new else "existing"
    return web.Response(
        text=f"{_HEAD}<p>Session <code>{escape(session_id)}</code> ({state})</p>\n"
        f"<ul>\n{rows}</ul>\n{_FORM}",
        content_type="text/html",
    )


async def apply_form(request: web.Request, session: MutableMapping[str, Any]) -> None:
    """On POST, setAttribute(dataName, dataValue), as test.jsp does."""
    if request.method != "POST":
        return
    form = await request.post()
    name, value = form.get("dataName"), form.get("dataValue")
    if isinstance(name, str) and name and isinstance(value, str):
        session[name] = value


# What a bare variant answers for a session: (request, id, new, created, attributes).
Render = Callable[[web.Request, str, bool, float, dict[str, str]], web.Response]


def bare_app(render: Render) -> web.Application:
    """Sessions in a dict in this process: the floor every other variant is measured on."""
    sessions: dict[str, tuple[float, dict[str, str]]] = {}

    async def test(request: web.Request) -> web.Response:
        sid = request.cookies.get(COOKIE)
        held = sessions.get(sid) if sid is not None else None
        new = held is None
        if held is None:
            sid = secrets.token_hex(16).upper()
            held = sessions[sid] = (time.time(), {})
        assert sid is not None
        created, attributes = held
        await apply_form(request, attributes)
        response = render(request, sid, new, created, attributes)
        if new:
            response.set_cookie(COOKIE, sid, path="/", httponly=True)
        return response

    app = web.Application()
    app.router.add_route("*", "/test", test)
    return app


def small_page(request: web.Request, sid: str, new: bool, created: float,
               attributes: dict[str, str]) -> web.Response:
    return page(sid, new, attributes.items())


def demo_page(port: int) -> Render:
    """The app server's own /test page (the same DemoPage, Server Info, session times,
    sign-in and forms): with it, the app server's layers are all that differs between
    `bare-page` and `python -m appserver`."""
    assets = load_assets()
    demo = DemoPage(route="app1", css_url=asset_url(assets, "style.css"),
                    logo_url=asset_url(assets, "logo.png"))
    address = f"127.0.0.1:{port}"

    def render(request: web.Request, sid: str, new: bool, created: float,
               attributes: dict[str, str]) -> web.Response:
        view = SessionView(address, sid, new, created, time.time(), MAX_INACTIVE_INTERVAL,
                           attributes.items(), "/test", "/logout", user=attributes.get("user"))
        return web.Response(text=demo.html(view, request.remote or "unknown"),
                            content_type="text/html")

    return render


async def aiohttp_session_test(request: web.Request) -> web.Response:
    """The page written against aiohttp-session's API: what both its variants serve."""
    session = await aiohttp_session.get_session(request)
    await apply_form(request, session)
    return page(session.identity or "", session.new, session.items())


def aiohttp_session_app(storage: aiohttp_session.AbstractStorage) -> web.Application:
    # aiohttp-session 2.12.1 keeps its storage and session under str request keys, which
    # aiohttp >= 3.14 answers with a NotAppKeyWarning on each request (twice): harmless here.
    warnings.filterwarnings("ignore", category=web.NotAppKeyWarning)
    app = web.Application()
    aiohttp_session.setup(app, storage)
    app.router.add_route("*", "/test", aiohttp_session_test)
    return app


def memcached_storage_app(host: str, port: int) -> web.Application:
    client = aiomcache.Client(host, port, pool_size=AIOMCACHE_POOL_SIZE)
    storage = MemcachedStorage(client, cookie_name=COOKIE, max_age=MAX_INACTIVE_INTERVAL)

    async def close_client(_: web.Application) -> AsyncIterator[None]:
        yield
        await client.close()

    app = aiohttp_session_app(storage)
    app.cleanup_ctx.append(close_client)
    return app


def adapter_app(nodes: list[tuple[str, int]]) -> web.Application:
    storage = MemcachedHAStorage(settings_for(nodes, sticky=True))
    app = aiohttp_session_app(storage)
    app.cleanup_ctx.append(storage.cleanup_ctx)
    return app


def settings_for(
    nodes: list[tuple[str, int]], *, sticky: bool
) -> sessionstore.SessionStoreSettings:
    used = nodes[:1] if sticky else nodes[:2]
    return sessionstore.SessionStoreSettings.from_mapping(
        {
            "jvm_route": "app1",
            "memcached_nodes": ",".join(
                f"n{number}:{host}:{port}" for number, (host, port) in enumerate(used, 1)
            ),
            "sticky": sticky,
            "max_inactive_interval": float(MAX_INACTIVE_INTERVAL),
        }
    )


def sessionstore_app(nodes: list[tuple[str, int]], *, sticky: bool) -> web.Application:
    settings = settings_for(nodes, sticky=sticky)

    async def test(request: web.Request) -> web.Response:
        session = await sessionstore.get_session(request)
        await apply_form(request, session)
        return page(session.id, session.new, session.items())

    app = web.Application()
    sessionstore.setup(app, settings)
    app.router.add_route("*", "/test", test)
    return app


def build_app(variant: str, port: int, nodes: list[tuple[str, int]]) -> web.Application:
    if variant == "bare":
        return bare_app(small_page)
    if variant == "bare-page":
        return bare_app(demo_page(port))
    if variant == "aiohttp-session":
        return memcached_storage_app(*nodes[0])
    if variant == "adapter":
        return adapter_app(nodes)
    return sessionstore_app(nodes, sticky=variant == "sticky")


def parse_nodes(text: str) -> list[tuple[str, int]]:
    nodes = []
    for address in filter(None, text.split(",")):
        host, _, port = address.rpartition(":")
        nodes.append((host, int(port)))
    return nodes


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3) or argv[0] not in VARIANTS:
        print(__doc__, file=sys.stderr)
        return 2
    variant, port = argv[0], int(argv[1])
    nodes = parse_nodes(argv[2]) if len(argv) == 3 else []
    needed = {"bare": 0, "bare-page": 0, "aiohttp-session": 1, "adapter": 1, "sticky": 1,
              "non-sticky": 2}[variant]
    if len(nodes) < needed:
        print(f"{variant} needs {needed} memcached address(es)", file=sys.stderr)
        return 2
    # A backup slower than session_backup_timeout under full load is logged; not a result.
    logging.getLogger("sessionstore").setLevel(logging.ERROR)
    app = build_app(variant, port, nodes)

    async def freeze(_: web.Application) -> None:
        gc.freeze()  # as `python -m appserver` does once started: the same for every variant

    app.on_startup.append(freeze)
    web.run_app(
        app,
        host="127.0.0.1",
        port=port,
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
