"""Running docker and docker compose from tests: every call bounded by a timeout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class DockerCommandError(RuntimeError):
    """A docker command failed; carries what it printed."""


def run(
    args: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Runs one command from the repository root; raises with its output on failure."""
    try:
        done = subprocess.run(
            list(args), cwd=REPO, env=None if env is None else dict(env),
            capture_output=True, text=True, timeout=timeout, check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise DockerCommandError(f"{' '.join(args)}: no answer within {timeout}s") from exc
    if check and done.returncode != 0:
        raise DockerCommandError(
            f"{' '.join(args)} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
    return done


def engine_answers() -> bool:
    """True when `docker version` reaches a server."""
    if shutil.which("docker") is None:
        return False
    done = run(["docker", "version", "--format", "{{.Server.Version}}"], timeout=20, check=False)
    return done.returncode == 0 and bool(done.stdout.strip())


def compose_command() -> list[str]:
    """`docker compose` (v2) when the plugin is there, else `docker-compose` (v1.29)."""
    v2 = run(["docker", "compose", "version"], timeout=20, check=False)
    if v2.returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose") is not None:
        return ["docker-compose"]
    raise DockerCommandError("neither `docker compose` nor `docker-compose` is installed")


def image_label(image: str, label: str) -> str | None:
    """The value of one label of a local image; None when the image is missing."""
    done = run(["docker", "image", "inspect", image], timeout=30, check=False)
    if done.returncode != 0:
        return None
    labels = json.loads(done.stdout)[0]["Config"].get("Labels") or {}
    return str(labels.get(label, ""))


def container_ids(filters: Mapping[str, str], *, running_only: bool = True) -> list[str]:
    """Ids of the containers that match every `docker ps --filter` given."""
    args = ["docker", "ps", "-q", "--no-trunc"]
    if not running_only:
        args.append("--all")
    for key, value in filters.items():
        args += ["--filter", f"{key}={value}"]
    return run(args, timeout=30).stdout.split()


def health_status(container: str) -> str:
    """`healthy`, `unhealthy`, `starting`, or the container state when it has no check."""
    done = run(["docker", "inspect", container], timeout=30)
    state = json.loads(done.stdout)[0]["State"]
    health = state.get("Health")
    return str(health["Status"]) if health else str(state["Status"])


def docker_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The caller's environment plus `extra`, with the classic builder (BuildKit may be absent)."""
    env = dict(os.environ)
    env.setdefault("DOCKER_BUILDKIT", "0")
    env.setdefault("COMPOSE_DOCKER_CLI_BUILD", "0")
    env.update(extra)
    return env
