"""One `python -m appserver` with traffic behind it, scraped as Prometheus would: shared by
the metrics tests and the dashboard test, which needs the names a real server exports."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from prometheus_client.metrics_core import Metric

from tests.support.memcached import MemcachedProcess

from .processes import AppServerProcess, start_appserver, stop_process
from .scrape import parse

POLL = "0.2"  # node_retry_interval: how often the server reads its nodes' stats


@dataclass
class Observed:
    server: AppServerProcess
    nodes: tuple[MemcachedProcess, MemcachedProcess]
    requests: dict[str, int]  # answers before the scrape: "GET 200", "POST 200", "GET 404"
    metrics: list[Metric]
    health: dict[str, Any]


async def traffic(server: AppServerProcess) -> dict[str, int]:
    """A session made and written, two page views, a miss."""
    async with aiohttp.ClientSession(headers={"Accept": "application/json"}) as http:
        async with http.post(server.url("/test"), data={"dataName": "a", "dataValue": "1"}) as r:
            assert r.status == 200
        for _ in range(2):
            async with http.get(server.url("/test")) as r:
                assert r.status == 200
        async with http.get(server.url("/nowhere")) as r:
            assert r.status == 404
    return {"POST 200": 1, "GET 200": 2, "GET 404": 1}


async def scrape_once_read(server: AppServerProcess) -> tuple[str, dict[str, Any], int]:
    """/metrics and /health once a stats poll has seen the session on n2; and how many
    times /health was asked until then."""
    deadline = time.monotonic() + 10
    polls = 0
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.get(server.url("/health")) as r:
                health = await r.json()
                polls += 1
            if all(node["items"] is not None for node in health["nodes"]) \
                    and health["nodes"][1]["items"] >= 1:
                break
            assert time.monotonic() < deadline, health
            await asyncio.sleep(0.05)
        async with http.get(server.url("/metrics")) as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/plain; version=")
            return await r.text(), health, polls


def observe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    """For a module fixture: the server, its traffic done, scraped; stopped after."""
    n1, n2 = MemcachedProcess().start(), MemcachedProcess(memory_mb=16).start()
    try:
        server = start_appserver("app1", n1, n2, log_dir=tmp_path_factory.mktemp("observed"),
                                 NODE_RETRY_INTERVAL=POLL, FAILOVER_NODES="n1")
        try:
            requests = asyncio.run(traffic(server))
            text, health, polls = asyncio.run(scrape_once_read(server))
            requests["GET 200"] += polls
            yield Observed(server, (n1, n2), requests, parse(text), health)
        finally:
            stop_process(server.process)
    finally:
        n1.kill()
        n2.kill()
