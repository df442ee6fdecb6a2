"""The failover journey through the proxy, on clusters started by `sessionha up`.

a) classic: one user, kill the app serving it, the other app has everything;
b) under load: 20 users for ~20 s while an app and the other host's memcached die
   and come back; c) a whole host lost. a) and b) also run non-sticky (round robin).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from .client import PageError, TestUser, http_session
from .conftest import ClusterFactory
from .launch import LocalCluster

pytestmark = pytest.mark.e2e

STICKY = {"sticky": True, "policy": "sticky"}
NON_STICKY = {"sticky": False, "policy": "round_robin"}
MODES = pytest.mark.parametrize("options", [STICKY, NON_STICKY], ids=["sticky", "non-sticky"])


async def in_thread(action: Any, *args: Any) -> None:
    """`sessionha kill/start` are real CLI runs; keep them off the event loop."""
    await asyncio.to_thread(action, *args)


UPSTREAM_BACK_WITHIN = 30.0


async def wait_upstream_up(http: aiohttp.ClientSession, cluster: LocalCluster, name: str) -> None:
    """Poll the proxy's status page until upstream `name` is up again."""
    deadline = time.monotonic() + UPSTREAM_BACK_WITHIN
    while True:
        async with http.get(cluster.url("/_proxy/status.json")) as response:
            status = await response.json()
        if any(u["name"] == name and u["up"] for u in status["upstreams"]):
            return
        assert time.monotonic() < deadline, f"proxy never took {name} back: {status}"
        await asyncio.sleep(0.2)


def entries(count: int, start: int = 0) -> dict[str, str]:
    return {f"entry{i}": f"value {i}" for i in range(start, start + count)}


@MODES
async def test_classic_scenario(cluster_factory: ClusterFactory, options: dict[str, Any]) -> None:
    cluster = cluster_factory(**options)
    async with http_session() as http:
        user = TestUser(http, cluster.url(""))
        for name, value in entries(5).items():
            await user.post(name, value)
        servers = {answer["server"] for answer in user.answers}
        if options["sticky"]:
            assert len(servers) == 1, "sticky: one app answers every request of a session"
        else:
            assert servers == {"app1", "app2"}, "round robin spreads one session over both"
        victim = user.answers[-1]["server"]
        survivor = "app2" if victim == "app1" else "app1"

        await in_thread(cluster.kill, victim)
        after_kill = await user.get()
        assert after_kill["server"] == survivor
        assert after_kill["attributes"] == entries(5)
        assert not after_kill["new"]

        for name, value in entries(2, start=5).items():
            await user.post(name, value)
        await in_thread(cluster.start_member, victim)
        # The proxy takes the restarted app back once its health checks pass again.
        await wait_upstream_up(http, cluster, victim)
        for _ in range(4):  # with round robin, both apps answer in turn
            view = await user.get()
            assert view["attributes"] == entries(7)
        assert {a["server"] for a in user.answers[-4:]} == (
            {survivor} if options["sticky"] else {"app1", "app2"}
        )
        # The random part of the id never changed: the same session all along.
        assert len({a["session_id"].split("-")[0] for a in user.answers}) == 1


@MODES
async def test_host_loss_keeps_every_session(
    cluster_factory: ClusterFactory, options: dict[str, Any]
) -> None:
    cluster = cluster_factory(**options)
    async with http_session() as http:
        users = [TestUser(http, cluster.url("")) for _ in range(10)]
        for number, user in enumerate(users):
            for name, value in entries(3).items():
                await user.post(name, f"{value} of user {number}")
        owners = {user.answers[-1]["server"] for user in users}
        if options["sticky"]:
            assert owners == {"app1", "app2"}, "new sessions are spread over both apps"

        # Host 1 goes down: app1 and the memcached next to it, at the same moment.
        await asyncio.gather(in_thread(cluster.kill, "app1"), in_thread(cluster.kill, "n1"))
        for number, user in enumerate(users):
            view = await user.get()
            assert view["server"] == "app2"
            assert view["attributes"] == {k: f"{v} of user {number}" for k, v in entries(3).items()}
        # And they go on working on the surviving host.
        for user in users:
            assert "late" in (await user.post("late", "yes"))["attributes"]


@dataclass
class LoadReport:
    acknowledged: dict[int, dict[str, str]] = field(default_factory=dict)
    failed_posts: list[tuple[float, str]] = field(default_factory=list)
    failed_gets: list[tuple[float, str]] = field(default_factory=list)
    requests: int = 0


async def one_user_loop(
    number: int, user: TestUser, report: LoadReport, started: float, stop: asyncio.Event
) -> None:
    acknowledged = report.acknowledged.setdefault(number, {})
    for step in range(10_000):  # bounded; `stop` ends it after ~20 s
        if stop.is_set():
            return
        name, value = f"k{step}", f"user {number} step {step}"
        try:
            await user.post(name, value)
            acknowledged[name] = value
        except (PageError, OSError, TimeoutError) as error:
            report.failed_posts.append((time.monotonic() - started, repr(error)))
        try:
            await user.get()
        except (PageError, OSError, TimeoutError) as error:
            report.failed_gets.append((time.monotonic() - started, repr(error)))
        report.requests += 2
        await asyncio.sleep(0.15)  # ~6 iterations a second per user: a steady, bounded load


async def failure_timeline(
    cluster: LocalCluster, started: float, stop: asyncio.Event, events: list[tuple[float, str]]
) -> None:
    async def at(second: float, what: str, *actions: Any) -> None:
        await asyncio.sleep(max(0.0, started + second - time.monotonic()))
        events.append((time.monotonic() - started, what))
        await asyncio.gather(*(in_thread(*action) for action in actions))

    await at(5, "kill app1", (cluster.kill, "app1"))
    await at(10, "kill n2", (cluster.kill, "n2"))
    await at(15, "start app1 and n2", (cluster.start_member, "app1"), (cluster.start_member, "n2"))
    await at(20, "stop clients")
    stop.set()


@MODES
async def test_under_load_no_acknowledged_entry_is_lost(
    cluster_factory: ClusterFactory, options: dict[str, Any]
) -> None:
    cluster = cluster_factory(**options)
    report = LoadReport()
    events: list[tuple[float, str]] = []
    stop = asyncio.Event()
    async with http_session() as http:
        users = [TestUser(http, cluster.url("")) for _ in range(20)]
        for user in users:
            await user.get()  # each user has its own session before the clock starts
        started = time.monotonic()
        await asyncio.wait_for(
            asyncio.gather(
                failure_timeline(cluster, started, stop, events),
                *(one_user_loop(n, user, report, started, stop) for n, user in enumerate(users)),
            ),
            timeout=60,
        )

        assert [m.state for m in cluster.status()] == ["running"] * 5
        for number, user in enumerate(users):
            final = await user.get()
            missing = {
                k: v
                for k, v in report.acknowledged[number].items()
                if final["attributes"].get(k) != v
            }
            assert missing == {}, f"user {number} lost acknowledged entries"
    print(
        f"{report.requests} requests; events {events}; "
        f"failed POSTs: {len(report.failed_posts)} {report.failed_posts}"
    )
    assert report.failed_gets == []
    # Each user has at most one request in flight, so the app kill can fail at most one
    # POST per user, and nothing may fail before that kill.
    assert len(report.failed_posts) <= len(users)
    app_kill = next(second for second, what in events if what == "kill app1")
    assert all(second >= app_kill for second, _ in report.failed_posts)
    assert sum(len(a) for a in report.acknowledged.values()) > 20 * 20  # the load was real
