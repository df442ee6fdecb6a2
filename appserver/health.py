"""GET /health: this server's route, its memcached nodes and how many sessions it holds.

Always 200 while the process can answer: with every memcached node dead, sticky sessions
still work from memory, so the status says "degraded" instead of failing the check. Each node
also shows its memcached `evictions` count as last read (null before the first read) and
`"evicting": true` while that count has grown lately: memcached is out of memory and throwing
items away, session backups among them.
"""

from __future__ import annotations

import json

from aiohttp import web
from aiohttp.typedefs import Handler

from sessionstore import MANAGER_KEY

from .settings import AppServerSettings
from .views import local_address


def health_handler(settings: AppServerSettings) -> Handler:
    async def serve_health(request: web.Request) -> web.Response:
        manager = request.app[MANAGER_KEY]
        nodes = manager.node_status()
        degraded = not any(node.alive for node in nodes)  # also: no node discovered yet
        body = {
            "status": "degraded" if degraded else "ok",
            "route": settings.jvm_route,
            "address": local_address(request, settings.listen),
            "sticky": settings.session.sticky,
            "sessions_in_memory": manager.local_session_count,
            "max_active_sessions": settings.session.max_active_sessions,
            "nodes": [
                {
                    "id": node.id,
                    "host": node.host,
                    "port": node.port,
                    "alive": node.alive,
                    "failover": node.failover,
                    "evictions": evictions.evictions,
                    "evicting": evictions.evicting,
                }
                for node in nodes
                for evictions in (manager.node_evictions(node.id),)
            ],
        }
        return web.Response(text=json.dumps(body), content_type="application/json")

    return serve_health
