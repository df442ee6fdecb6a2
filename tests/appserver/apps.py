"""Settings for app servers under test, backed by real memcached processes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from appserver import AppServerSettings
from tests.support.memcached import MemcachedProcess

Client = TestClient[web.Request, web.Application]
AppClient = Callable[..., Awaitable[Client]]


def settings_for(
    *memcached: MemcachedProcess, route: str = "app1", **extra: Any
) -> AppServerSettings:
    """Settings of one app server whose nodes n1, n2, ... are the given memcached servers."""
    nodes = ",".join(f"n{i}:{server.address}" for i, server in enumerate(memcached, start=1))
    values: dict[str, object] = {
        "listen": "127.0.0.1:0",
        "jvm_route": route,
        "memcached_nodes": nodes,
        "operation_timeout": 0.5,
    }
    return AppServerSettings.from_mapping(values | extra)
