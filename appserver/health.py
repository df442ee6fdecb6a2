"""GET /health: this server's route, its memcached nodes and how many sessions it holds.

Always 200 while the process can answer: with every memcached node dead, sticky sessions
still work from memory, so the status says "degraded" instead of failing the check. Each node
also shows its memcached `evictions` count as last read (null before the first read) and
`"evicting": true` while that count has grown lately: memcached is out of memory and throwing
items away, session backups among them; from the same reading `items`, `bytes` and
`limit_maxbytes`.

The proxy polls this page and builds its cluster view from it: the sessions this server took
over (and from which route), the sessions it relocated between nodes (from which node to
which), and the backups that failed, in all and per node.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from sessionstore import MANAGER_KEY, SessionManager

from .settings import AppServerSettings
from .views import local_address


def health_handler(settings: AppServerSettings) -> Handler:
    async def serve_health(request: web.Request) -> web.Response:
        manager = request.app[MANAGER_KEY]
        body = health_body(manager, settings, local_address(request, settings.listen))
        return web.Response(text=json.dumps(body), content_type="application/json")

    return serve_health


def health_body(
    manager: SessionManager, settings: AppServerSettings, address: str
) -> dict[str, Any]:
    stats = manager.stats
    failed_by_node = stats.backups_failed_by_node
    taken_over_from = stats.taken_over_from
    relocations = stats.relocations
    nodes = manager.node_status()
    degraded = not any(node.alive for node in nodes)  # also: no node discovered yet
    return {
        "status": "degraded" if degraded else "ok",
        "route": settings.jvm_route,
        "address": address,
        "sticky": settings.session.sticky,
        "sessions_in_memory": manager.local_session_count,
        "max_active_sessions": settings.session.max_active_sessions,
        "sessions_taken_over": stats.sessions_taken_over,
        "taken_over_from": dict(taken_over_from),
        "sessions_relocated": stats.sessions_relocated,
        "relocations": {source: dict(targets) for source, targets in relocations.items()},
        "backups_failed": stats.backups_failed,
        "nodes": [
            {
                "id": node.id,
                "host": node.host,
                "port": node.port,
                "alive": node.alive,
                "failover": node.failover,
                "evictions": memcached.evictions,
                "evicting": memcached.evicting,
                "backups_failed": failed_by_node.get(node.id, 0),
                "items": memcached.items,
                "bytes": memcached.bytes,
                "limit_maxbytes": memcached.limit_maxbytes,
            }
            for node in nodes
            for memcached in (manager.node_evictions(node.id),)
        ],
    }
