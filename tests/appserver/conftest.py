"""App servers for the tests: real apps on aiohttp's test server, real memcached behind them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from appserver import create_app
from tests.support.memcached import MemcachedProcess

from .apps import AppClient, Client, settings_for


@pytest.fixture
def app_client(
    aiohttp_client: Callable[..., Awaitable[Client]], memcached: MemcachedProcess
) -> AppClient:
    """app_client(*memcached, **settings) -> a client of one app server (default: the
    `memcached` fixture as its only node)."""

    async def start(*servers: MemcachedProcess, **extra: Any) -> Client:
        settings = settings_for(*(servers or (memcached,)), **extra)
        return await aiohttp_client(create_app(settings))

    return start
