"""App servers for the tests: real apps on aiohttp's test server or as `python -m appserver`
processes, real memcached behind them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from appserver import create_app
from tests.support.memcached import MemcachedProcess

from .apps import AppClient, Client, settings_for
from .processes import AppServerProcess, appserver_with_memcached, start_appserver, stop_process


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


@pytest.fixture
def appserver_process(tmp_path: Path) -> Iterator[Callable[..., AppServerProcess]]:
    """Starts `python -m appserver` from environment settings; kills what is left at the end."""
    started: list[AppServerProcess] = []

    def start(route: str, *memcached: MemcachedProcess, **env: str) -> AppServerProcess:
        server = start_appserver(route, *memcached, log_dir=tmp_path, **env)
        started.append(server)
        return server

    yield start
    for server in started:
        stop_process(server.process)


@pytest.fixture(scope="module")
def logged_appserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServerProcess]:
    """One `python -m appserver` with its access log on, shared by a module's tests (each
    tags its requests through User-Agent to find its own log lines), and its memcached."""
    yield from appserver_with_memcached(
        tmp_path_factory.mktemp("appserver"),
        ACCESS_LOG="true",
        # Each test makes a session or two, all from 127.0.0.1: no creation rate limit.
        SESSION_CREATE_RATE="0",
    )
