"""create_app: the aiohttp application of one app server, wired to sessionstore."""

from __future__ import annotations

from aiohttp import web

import sessionstore
from sessionstore.client_address import TrustedProxies
from settingsdoc import package_version

from .health import health_handler
from .metrics import (
    AppServerCollector,
    metrics_handler,
    metrics_registry,
    node_views,
)
from .pages import DemoPage
from .routing import TrackedRoutes
from .settings import AppServerSettings
from .static import asset_url, load_assets, static_handler
from .traffic import RequestTracker
from .views import SessionPages, session_parameter_route

SETTINGS_KEY = web.AppKey("appserver_settings", AppServerSettings)
REQUESTS_KEY = web.AppKey("appserver_requests", RequestTracker)


def create_app(settings: AppServerSettings) -> web.Application:
    app = web.Application(client_max_size=settings.client_max_body_size)
    manager = sessionstore.setup(app, settings.session, middleware=False)
    # No aiohttp middleware: every route's handler is wrapped by the request tracker, which
    # runs sessionstore's middleware inside, so it also sees the answers that one makes.
    requests = RequestTracker(trusted=TrustedProxies(settings.session.trusted_networks),
                              inner=sessionstore.session_middleware(manager))
    app[SETTINGS_KEY] = settings
    app[REQUESTS_KEY] = requests

    assets = load_assets()
    pages = SessionPages(
        settings=settings,
        page=DemoPage(
            route=settings.jvm_route,
            css_url=asset_url(assets, "style.css"),
            logo_url=asset_url(assets, "logo.png"),
        ),
    )
    registry = metrics_registry(
        AppServerCollector(
            version=package_version(),
            requests=requests,
            stats=manager.stats,
            nodes=lambda: node_views(manager),
            sessions_in_memory=lambda: manager.local_session_count,
        )
    )

    routes = TrackedRoutes(app.router, requests.wrap)
    id_parameter = session_parameter_route(settings.session.session_cookie_name)
    for path in ("/test", "/test.jsp"):
        # The plain path first: an exact match is the cheapest lookup for the common case.
        for route in (path, path + id_parameter):
            routes.get(route, pages.test)
            routes.post(route, pages.test)
    routes.post("/login", pages.login)
    routes.post("/login" + id_parameter, pages.login)
    routes.post("/logout", pages.logout)
    routes.post("/logout" + id_parameter, pages.logout)
    routes.get("/", _to_test_page)
    serve_static = static_handler(assets)
    routes.get("/static/{name:[^/;]+}", serve_static)
    routes.get("/static/{name:[^/;]+}" + id_parameter, serve_static)
    routes.get(r"/{name:favicon\.ico}", static_handler({"favicon.ico": assets["logo.png"]}))
    routes.get("/health", health_handler(settings))
    routes.get("/metrics", metrics_handler(registry))
    routes.add_no_route()
    return app


async def _to_test_page(request: web.Request) -> web.Response:
    return web.Response(status=302, headers={"Location": "/test"})
