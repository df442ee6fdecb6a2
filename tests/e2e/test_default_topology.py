"""`cluster.toml` as shipped comes up on a machine where memcached's own service runs.

On Debian and Ubuntu, installing memcached starts `memcached.service` on 127.0.0.1:11211;
the first `scripts/up` must succeed next to it without the user stopping anything.
"""

from __future__ import annotations

import fcntl
import json
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from cluster.topology import load_topology
from tests.support.memcached import MemcachedProcess

from .launch import LocalCluster, PortTakenError, port_bound

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SYSTEM_MEMCACHED = ("127.0.0.1", 11211)  # where memcached.service listens
STANDARD_PORTS = {11211: "memcached.service", 80: "nginx.service"}  # what the install brings
JSON = {"Accept": "application/json"}
LOCK = Path("/tmp/sessionha-default-topology.lock")


@contextmanager
def default_ports() -> Iterator[None]:
    """One test run at a time on this machine may use the default topology's fixed ports."""
    with LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def test_the_default_topology_avoids_the_ports_the_install_step_brings() -> None:
    topology = load_topology(REPO / "cluster.toml")
    taken = {m.listen.port: m.name for m in topology.members if m.listen.port in STANDARD_PORTS}
    assert taken == {}, f"the default topology wants {taken}, held by {STANDARD_PORTS}"


def test_the_default_topology_comes_up_next_to_the_system_memcached() -> None:
    config = (REPO / "cluster.toml").read_text(encoding="utf-8")
    with default_ports():
        system: MemcachedProcess | None = None
        if not port_bound(*SYSTEM_MEMCACHED):  # else something holds it already: as well
            system = MemcachedProcess(host=SYSTEM_MEMCACHED[0], port=SYSTEM_MEMCACHED[1])
            system.start()
        cluster = LocalCluster(config)  # the same bytes as cluster.toml
        try:
            try:
                cluster.start()
            except PortTakenError as error:
                pytest.fail(f"a port of the default topology is taken on this machine: {error}")
            page = urllib.request.Request(cluster.url("/test"), headers=JSON)
            with urllib.request.urlopen(page, timeout=10) as answer:
                assert answer.status == 200
                assert json.loads(answer.read())["server"] in {"app1", "app2"}
            assert {m.state for m in cluster.status()} == {"running"}
        finally:
            leaks = cluster.close()
            if system is not None:
                system.kill()
        assert leaks == []
