"""Fixtures shared by every test: real memcached servers on free loopback ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.support.memcached import MemcachedProcess


@pytest.fixture
def memcached_factory() -> Iterator[Callable[..., MemcachedProcess]]:
    """Starts as many memcached servers as a test asks for; stops them all after it."""
    started: list[MemcachedProcess] = []

    def start(**kwargs: object) -> MemcachedProcess:
        server = MemcachedProcess(**kwargs).start()  # type: ignore[arg-type]
        started.append(server)
        return server

    yield start
    # Contents are throwaway and memcached needs about a second to exit on SIGTERM.
    for server in started:
        server.kill()


@pytest.fixture
def memcached(memcached_factory: Callable[..., MemcachedProcess]) -> MemcachedProcess:
    return memcached_factory()
