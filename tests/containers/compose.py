"""One docker compose project of the repository's docker-compose.yml, owned by a test."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .engine import REPO, DockerCommandError, health_status, run

COMPOSE_FILE = REPO / "docker-compose.yml"
HOST_LABEL = "sessionha.host"


def load_compose_file(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The compose file as plain data (YAML merge keys resolved)."""
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def host_members(compose: dict[str, Any], host: str) -> list[str]:
    """The services that play `host` (their sessionha.host label)."""
    return sorted(
        name for name, service in compose["services"].items()
        if (service.get("labels") or {}).get(HOST_LABEL) == host
    )


@dataclass
class ComposeProject:
    """`docker compose -p NAME -f docker-compose.yml ...` with a fixed environment."""

    name: str
    command: list[str]
    env: dict[str, str]
    log: list[str] = field(default_factory=list)

    def __call__(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        self.log.append(" ".join(args))
        return run([*self.command, "-p", self.name, "-f", str(COMPOSE_FILE), *args],
                   env=self.env, timeout=timeout)

    def container(self, service: str) -> str:
        ids = self("ps", "-q", service, timeout=30).stdout.split()
        if len(ids) != 1:
            raise DockerCommandError(f"{service}: expected one container, found {ids}")
        return ids[0]

    def wait_healthy(self, service: str, *, within: float) -> None:
        container = self.container(service)
        deadline = time.monotonic() + within
        status = health_status(container)
        while status != "healthy":
            if time.monotonic() > deadline:
                raise DockerCommandError(f"{service} is {status!r}, not healthy, after {within}s")
            time.sleep(0.3)
            status = health_status(container)

    def down(self) -> None:
        """Removes containers, networks and volumes; keeps going if some are gone already."""
        run([*self.command, "-p", self.name, "-f", str(COMPOSE_FILE),
             "down", "-v", "--remove-orphans", "-t", "5"], env=self.env, timeout=120, check=False)

    def logs(self) -> str:
        done = run([*self.command, "-p", self.name, "-f", str(COMPOSE_FILE),
                    "logs", "--no-color", "--tail", "40"], env=self.env, timeout=60, check=False)
        return done.stdout + done.stderr
