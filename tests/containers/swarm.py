"""A single-node Docker Swarm and one stack of deploy/swarm/stack.yml, owned by a test."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from .engine import REPO, DockerCommandError, container_ids, run

STACK_FILE = REPO / "deploy" / "swarm" / "stack.yml"


def swarm_state() -> str:
    """inactive, active, pending, error or locked."""
    done = run(["docker", "info", "--format", "{{json .Swarm.LocalNodeState}}"], timeout=30)
    return str(json.loads(done.stdout))


@dataclass
class Stack:
    """`docker stack deploy` of the stack file under `name`, with a fixed environment."""

    name: str
    env: dict[str, str]

    def service(self, short: str) -> str:
        return f"{self.name}_{short}"

    def deploy(self) -> None:
        run(["docker", "stack", "deploy", "--resolve-image", "never", "--prune",
             "-c", str(STACK_FILE), self.name], env=self.env, timeout=120)

    def remove(self) -> None:
        """`docker stack rm`, then waits (bounded) until its containers and network are gone."""
        run(["docker", "stack", "rm", self.name], timeout=120, check=False)
        deadline = time.monotonic() + 90
        label = f"com.docker.stack.namespace={self.name}"
        while time.monotonic() < deadline:
            left = container_ids({"label": label}, running_only=False)
            networks = run(["docker", "network", "ls", "-q", "--filter", f"label={label}"],
                           timeout=30).stdout.split()
            if not left and not networks:
                return
            time.sleep(0.5)

    def scale(self, short: str, replicas: int) -> None:
        run(["docker", "service", "scale", "--detach=false", f"{self.service(short)}={replicas}"],
            timeout=300)

    def update_force(self, short: str) -> None:
        run(["docker", "service", "update", "--detach=false", "--force", self.service(short)],
            timeout=600)

    def kill_one_task(self, short: str, *, within: float = 30.0) -> str:
        """SIGKILLs the container of one running task; returns once it no longer runs."""
        victim = self.running_containers(short)[0]
        run(["docker", "kill", victim], timeout=30)
        deadline = time.monotonic() + within
        while victim in self.running_containers(short):
            if time.monotonic() > deadline:
                raise DockerCommandError(f"{victim} still runs {within}s after docker kill")
            time.sleep(0.2)
        return victim

    def running_containers(self, short: str) -> list[str]:
        return container_ids({"label": f"com.docker.swarm.service.name={self.service(short)}",
                              "status": "running"})

    def wait_running(self, short: str, replicas: int, *, within: float) -> None:
        """Until exactly `replicas` tasks of the service run and are healthy."""
        deadline = time.monotonic() + within
        while True:
            states = self._task_health(short)
            if len(states) == replicas and all(s == "healthy" for s in states):
                return
            if time.monotonic() > deadline:
                raise DockerCommandError(f"{self.service(short)}: {states}, not {replicas} healthy")
            time.sleep(0.5)

    def _task_health(self, short: str) -> list[str]:
        ids = self.running_containers(short)
        if not ids:
            return []
        done = run(["docker", "inspect", *ids], timeout=30, check=False)
        if done.returncode != 0:
            return ["gone"]
        return [str((c["State"].get("Health") or {}).get("Status", c["State"]["Status"]))
                for c in json.loads(done.stdout)]

    def logs(self, short: str) -> str:
        done = run(["docker", "service", "logs", "--no-trunc", "--tail", "30", self.service(short)],
                   timeout=60, check=False)
        return done.stdout + done.stderr
