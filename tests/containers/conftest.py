"""Fixtures for the container tests: a running engine, stand-in images, a wheelhouse."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import standins
from .engine import REPO, docker_env, engine_answers, run
from .swarm import swarm_state

WHEELHOUSE = "wheelhouse"  # relative to the build context (the repository root)
IMAGE_LABEL = "org.opencontainers.image.title=sessionha"  # set by the Dockerfile


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[None]:
    """A Docker engine that answers; scripts/docker-engine starts dockerd if needed.

    A machine without Docker fails these tests: scripts/install --test installs it.
    At the end, images of earlier builds of the project that lost their tag are removed.
    """
    if shutil.which("docker") is None or shutil.which("dockerd") is None:
        pytest.fail("Docker is not installed: scripts/install --test installs it")
    if not engine_answers():
        run([str(REPO / "scripts" / "docker-engine")], timeout=90)
    assert engine_answers(), "the Docker engine does not answer after scripts/docker-engine"
    yield
    run(["docker", "image", "prune", "--force", "--filter", f"label={IMAGE_LABEL}"],
        timeout=120, check=False)


@pytest.fixture(scope="session")
def python_image(docker_engine: None) -> str:
    """A stand-in for python:3.12-slim: Debian bookworm minbase with python3 (3.11)."""
    return standins.ensure(standins.PYTHON)


@pytest.fixture(scope="session")
def memcached_image(docker_engine: None) -> str:
    """A stand-in for the official memcached image (flags-only commands go to memcached)."""
    return standins.ensure(standins.MEMCACHED)


@pytest.fixture(scope="session")
def wheelhouse(python_image: str) -> str:
    """Wheels of the project and every dependency, inside the build context.

    Built by this interpreter, so its Python must match the base image's (no compiler
    and no index are needed inside the image).
    """
    image_python = run(
        ["docker", "run", "--rm", python_image, "python3", "-c",
         "import sys; print('%d.%d' % sys.version_info[:2])"], timeout=60,
    ).stdout.strip()
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert image_python == here, (
        f"wheels built by Python {here} do not fit the base image's Python {image_python}"
    )
    target = REPO / WHEELHOUSE
    shutil.rmtree(target, ignore_errors=True)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", ".", "-w", str(target)],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "SOURCE_DATE_EPOCH": "315532800"},  # same bytes, cached layers
    )
    assert built.returncode == 0, f"pip wheel failed:\n{built.stdout}\n{built.stderr}"
    assert any(Path(target).glob("sessionha-*.whl"))
    return WHEELHOUSE


@pytest.fixture(scope="session")
def app_image(python_image: str, wheelhouse: str) -> str:
    """The project's image built from the Dockerfile on the stand-in base, from the wheelhouse."""
    tag = "sessionha-test/sessionha:local"
    run(["docker", "build", "--quiet", "--tag", tag,
         "--build-arg", f"PYTHON_IMAGE={python_image}", "--build-arg", f"WHEELHOUSE={wheelhouse}",
         "."], timeout=600, env=docker_env({}))
    return tag


@pytest.fixture
def swarm(docker_engine: None) -> Iterator[None]:
    """This engine as a swarm manager; it leaves the swarm only if this fixture made it join."""
    state = swarm_state()
    if state not in ("inactive", "active"):
        pytest.fail(f"the engine's swarm state is {state!r}: fix it by hand")
    made = state == "inactive"
    if made:
        run(["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"], timeout=60)
    try:
        yield
    finally:
        if made:
            run(["docker", "swarm", "leave", "--force"], timeout=60, check=False)
