"""sessionha on a real single-node Docker Swarm: 3 app replicas and 3 memcached nodes
found through DNS; scale, kill tasks and roll out an update under a client loop, with
traffic only through the proxy's published port on 127.0.0.1. No session loses data."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.support.ports import free_port

from .browser import Browser, first_page
from .engine import docker_env
from .swarm import Stack
from .traffic import ClientLoop, Ledger, check_all, register_users

RecordProperty = Callable[[str, object], None]  # pytest's record_property fixture
pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

APP_REPLICAS = 3
MEMCACHED_REPLICAS = 3


@pytest.fixture
def stack(swarm: None, app_image: str, memcached_image: str) -> Iterator[Stack]:
    """A stack of its own on a free port; `docker stack rm` runs whatever happens."""
    deployed = Stack(
        name=f"shtest{uuid.uuid4().hex[:8]}",
        env=docker_env({
            "SESSIONHA_IMAGE": app_image,
            "MEMCACHED_IMAGE": memcached_image,
            "PROXY_PORT": str(free_port()),
            "APP_REPLICAS": str(APP_REPLICAS),
            "MEMCACHED_REPLICAS": str(MEMCACHED_REPLICAS),
            # One node plays every host here (the stack's default is one task per node).
            "MEMCACHED_MAX_REPLICAS_PER_NODE": str(MEMCACHED_REPLICAS),
        }),
    )
    try:
        yield deployed
    finally:
        deployed.remove()


def routes_seen_by_new_sessions(port: int, want: int, *, within: float) -> set[str]:
    """Opens fresh sessions until `want` different app servers have answered them."""
    seen: set[str] = set()
    deadline = time.monotonic() + within
    while len(seen) < want:
        assert time.monotonic() < deadline, f"only {sorted(seen)} answered within {within}s"
        seen.add(Browser(port).get().server)
    return seen


def assert_clean(ledger: Ledger, phase: str) -> None:
    assert not ledger.failed_gets, f"{phase}: failed GETs {ledger.failed_gets[:3]}"
    assert not ledger.lost, f"{phase}: lost acknowledged writes {ledger.lost[:3]}"


def test_scale_kill_and_roll_out_under_load_without_losing_a_session(
    stack: Stack, record_property: RecordProperty
) -> None:
    try:
        journey(stack, record_property)
    except Exception:
        print(stack.logs("proxy"), stack.logs("app"), stack.logs("memcached"))
        raise


def journey(stack: Stack, record_property: RecordProperty) -> None:
    port = int(stack.env["PROXY_PORT"])
    stack.deploy()
    stack.wait_running("memcached", MEMCACHED_REPLICAS, within=120)
    stack.wait_running("app", APP_REPLICAS, within=120)
    first_page(port, within=120)
    first_routes = routes_seen_by_new_sessions(port, APP_REPLICAS, within=60)
    users = register_users(port, count=30, entries=3)
    figures: dict[str, object] = {}

    # a) scale the app service 3 -> 5 -> 2 while the loop reads and writes
    with ClientLoop(users) as loop:
        started = time.monotonic()
        stack.scale("app", 5)  # returns when the new tasks run
        figures["scale_up_tasks_running_seconds"] = round(time.monotonic() - started, 1)
        routes_seen_by_new_sessions(port, 5, within=120)  # every replica has taken a session
        figures["scale_up_to_traffic_seconds"] = round(time.monotonic() - started, 1)
        loop.wait_passes(1, within=120)
        stack.scale("app", 2)
        stack.wait_running("app", 2, within=120)
        loop.wait_passes(2, within=120)
        scaled = loop.stop()
    figures["scale_requests"] = scaled.gets + scaled.posts
    figures["scale_failed_gets"] = len(scaled.failed_gets)
    figures["scale_failed_posts"] = len(scaled.failed_posts)
    assert_clean(scaled, "scale 3 -> 5 -> 2")
    assert first_routes, first_routes

    # b) kill one app task's container, then one memcached task's: the orchestrator
    # replaces them and every session keeps its data
    with ClientLoop(users) as loop:
        stack.kill_one_task("app")
        stack.wait_running("app", 2, within=120)
        loop.wait_passes(2, within=120)
        stack.kill_one_task("memcached")
        stack.wait_running("memcached", MEMCACHED_REPLICAS, within=120)
        loop.wait_passes(2, within=120)
        killed = loop.stop()
    figures["kill_requests"] = killed.gets + killed.posts
    figures["kill_failed_gets"] = len(killed.failed_gets)
    figures["kill_failed_posts"] = len(killed.failed_posts)
    assert_clean(killed, "killed tasks")

    # c) rolling update of the app service, one task at a time, under the loop
    with ClientLoop(users) as loop:
        stack.update_force("app")
        stack.wait_running("app", 2, within=120)
        loop.wait_passes(1, within=120)
        rolled = loop.stop()
    figures["rolling_update_failed_gets"] = len(rolled.failed_gets)
    figures["rolling_update_failed_posts"] = len(rolled.failed_posts)
    figures["rolling_update_requests"] = rolled.gets + rolled.posts
    assert_clean(rolled, "rolling update")

    assert_clean(check_all(users), "after everything")
    for name, value in figures.items():
        record_property(name, value)
    print("\nswarm figures:", figures)
