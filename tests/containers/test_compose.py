"""The container journey of the README, with a real Docker engine: `up`, register
entries, kill the app server that holds them, kill a whole host; nothing is lost.

Everything goes through the proxy's published port on 127.0.0.1, as a user's browser.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.support.ports import free_port

from .browser import Browser, first_page, wait_upstream_up
from .compose import ComposeProject, host_members, load_compose_file
from .engine import compose_command, docker_env

RecordProperty = Callable[[str, object], None]  # pytest's record_property fixture
pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

ENTRIES = {f"entry{n}": f"value {n}" for n in range(1, 6)}


@pytest.fixture
def compose_project(
    python_image: str, memcached_image: str, wheelhouse: str
) -> Iterator[ComposeProject]:
    """A compose project of its own, on a free port; `down -v` runs whatever happens."""
    port = free_port()
    project = ComposeProject(
        name=f"sessionha-test-{uuid.uuid4().hex[:8]}",
        command=compose_command(),
        env=docker_env({
            "PYTHON_IMAGE": python_image,
            "MEMCACHED_IMAGE": memcached_image,
            "WHEELHOUSE": wheelhouse,
            "PROXY_PORT": str(port),
            "SESSIONHA_IMAGE": "sessionha-test/sessionha:local",
        }),
    )
    try:
        yield project
    finally:
        project.down()


def session_key(session_id: str) -> str:
    """The random part of a session id, which never changes while the session lives."""
    return session_id.split("-", 1)[0]


def test_sessions_survive_a_killed_app_server_and_a_killed_host(
    compose_project: ComposeProject, record_property: RecordProperty
) -> None:
    try:
        journey(compose_project, record_property)
    except Exception:
        print(compose_project.logs())
        raise


def journey(compose: ComposeProject, record_property: RecordProperty) -> None:
    port = int(compose.env["PROXY_PORT"])
    started = time.monotonic()
    compose("up", "-d", "--build", timeout=600)
    up_seconds = time.monotonic() - started
    first_200 = up_seconds + first_page(port, within=60)
    record_property("compose_up_seconds", round(up_seconds, 1))
    record_property("up_to_first_200_seconds", round(first_200, 1))
    print(f"\ncompose up: {up_seconds:.1f}s, up to first 200 from /test: {first_200:.1f}s")

    browser = Browser(port)
    for name, value in ENTRIES.items():
        browser.post(name, value)
    owners = {page.server for page in browser.history}
    assert len(owners) == 1, f"one app server answers a sticky session, got {owners}"
    (first_owner,) = owners
    assert browser.history[-1].attributes == ENTRIES
    key = session_key(browser.history[-1].session_id)

    # The app server that holds the session dies: the other one answers, with everything.
    compose("kill", first_owner)
    page = browser.get()
    assert page.server != first_owner
    assert page.attributes == ENTRIES
    assert session_key(page.session_id) == key

    compose("start", first_owner)
    compose.wait_healthy(first_owner, within=60)
    wait_upstream_up(port, first_owner, within=60)  # as the status page shows it

    # A whole host dies: the current owner and the memcached on its host.
    second_owner = page.server
    layout = load_compose_file()
    host = layout["services"][second_owner]["labels"]["sessionha.host"]
    doomed = host_members(layout, host)
    assert second_owner in doomed and len(doomed) == 2, doomed
    compose("kill", *doomed)
    page = browser.get()
    assert page.server == first_owner
    assert page.attributes == ENTRIES
    assert session_key(page.session_id) == key
