"""The hardening of the compose file and the stack file, as a real engine receives it.

Reading the files proves what they say (test_compose_file.py, test_deploy_files.py); an
engine or an orchestrator may still drop a setting with a warning nobody reads, as
`docker stack deploy` does with security_opt. Here the containers and services are
created and inspected, without running the journeys (test_compose.py and test_swarm.py
run those, hardened), and a one-node swarm shows max_replicas_per_node at work.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.ports import free_port

from .compose import ComposeProject, load_compose_file
from .engine import compose_command, docker_env, run
from .swarm import STACK_FILE, Stack

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

SETUID_FILES = ["find", "/", "-xdev", "-perm", "/6000", "-type", "f"]


def compose_bytes(size: str) -> int:
    match = re.fullmatch(r"(\d+)([kmg])", size)
    assert match, f"not a size: {size!r}"
    return int(match[1]) * 1024 ** ("kmg".index(match[2]) + 1)


def test_the_image_has_no_set_user_id_or_set_group_id_file(
    python_image: str, app_image: str
) -> None:
    """What no-new-privileges guards against is gone, where the platform cannot set it."""
    base = run(["docker", "run", "--rm", "--user", "0", python_image, *SETUID_FILES], timeout=60)
    assert base.stdout.split(), "the base image has some (su, passwd, mount): the test tests"
    ours = run(["docker", "run", "--rm", "--user", "0", app_image, *SETUID_FILES], timeout=60)
    assert ours.stdout.split() == []


@pytest.fixture
def created_project(
    python_image: str, memcached_image: str, wheelhouse: str, app_image: str
) -> Iterator[ComposeProject]:
    """The compose project's containers created, not started; `down` runs whatever happens."""
    project = ComposeProject(
        name=f"sessionha-hardening-{uuid.uuid4().hex[:8]}",
        command=compose_command(),
        env=docker_env({
            "PYTHON_IMAGE": python_image,
            "MEMCACHED_IMAGE": memcached_image,
            "WHEELHOUSE": wheelhouse,
            "PROXY_PORT": str(free_port()),
            "SESSIONHA_IMAGE": app_image,
        }),
    )
    try:
        project("up", "--no-start", "--no-build", timeout=120)
        yield project
    finally:
        project.down()


def test_compose_hands_every_setting_to_the_engine(created_project: ComposeProject) -> None:
    services: dict[str, Any] = load_compose_file()["services"]
    for name, service in services.items():
        done = run(["docker", "inspect", created_project.container(name)], timeout=30)
        host = json.loads(done.stdout)[0]["HostConfig"]
        assert host["ReadonlyRootfs"] is True, name
        assert host["CapDrop"] == ["ALL"], name
        assert host["SecurityOpt"] == ["no-new-privileges:true"], name
        assert host["Memory"] == compose_bytes(service["mem_limit"]), name
        assert host["NanoCpus"] == int(float(service["cpus"]) * 1e9), name
        assert host["PidsLimit"] == int(service["pids_limit"]), name
        expected_tmpfs = dict(t.split(":", 1) for t in service.get("tmpfs", []))
        assert (host.get("Tmpfs") or {}) == expected_tmpfs, name


def service_spec(stack: Stack, short: str) -> dict[str, Any]:
    done = run(["docker", "service", "inspect", stack.service(short)], timeout=30)
    spec: dict[str, Any] = json.loads(done.stdout)[0]["Spec"]
    return spec


def task_states(stack: Stack, short: str) -> list[tuple[str, str]]:
    """(current state, error) of every task meant to run."""
    done = run(["docker", "service", "ps", "--no-trunc", "--filter", "desired-state=running",
                "--format", "{{.CurrentState}}\t{{.Error}}", stack.service(short)], timeout=30)
    return [(state.split()[0], error) for state, error in
            (line.split("\t", 1) for line in done.stdout.splitlines())]


def test_swarm_keeps_every_setting_and_spreads_memcached_one_task_per_node(
    swarm: None, app_image: str, memcached_image: str
) -> None:
    stack = Stack(
        name=f"shharden{uuid.uuid4().hex[:8]}",
        env=docker_env({
            "SESSIONHA_IMAGE": app_image,
            "MEMCACHED_IMAGE": memcached_image,
            "PROXY_PORT": str(free_port()),
            "APP_REPLICAS": "1",
            "MEMCACHED_REPLICAS": "2",  # on one node, with the default of one per node
        }),
    )
    try:
        done = run(["docker", "stack", "deploy", "--resolve-image", "never", "-c",
                    str(STACK_FILE), stack.name], env=stack.env, timeout=120)
        assert "Ignoring" not in done.stdout + done.stderr, done.stdout + done.stderr
        for short in ("memcached", "app", "proxy"):
            task = service_spec(stack, short)["TaskTemplate"]
            container = task["ContainerSpec"]
            assert container["ReadOnly"] is True, short
            assert container["CapabilityDrop"] == ["ALL"], short
            limits = task["Resources"]["Limits"]
            assert limits["NanoCPUs"] > 0 and limits["MemoryBytes"] > 0 and limits["Pids"] > 0
            tmpfs = [m["Target"] for m in container.get("Mounts", []) if m["Type"] == "tmpfs"]
            assert tmpfs == ([] if short == "memcached" else ["/tmp"]), short
        memcached = service_spec(stack, "memcached")["TaskTemplate"]
        assert memcached["Placement"]["MaxReplicas"] == 1

        deadline = time.monotonic() + 90
        states = task_states(stack, "memcached")
        while sorted(state for state, _ in states) != ["Pending", "Running"]:
            assert time.monotonic() < deadline, f"memcached tasks: {states}"
            time.sleep(0.5)
            states = task_states(stack, "memcached")
        (waiting,) = [error for state, error in states if state == "Pending"]
        assert "max replicas per node" in waiting, waiting
    finally:
        stack.remove()
