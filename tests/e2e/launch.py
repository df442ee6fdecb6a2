"""A real launcher (`python -m cluster up`) per test, on free ports, always torn down.

Teardown stops the launcher with SIGTERM (SIGKILL if it hangs), then makes sure that
no member it ever reported is still alive and no port of the topology is still bound;
anything left behind is killed and reported as a failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cluster.control import request
from cluster.errors import ControlError
from cluster.spawn import die_with_parent
from cluster.status import MemberStatus
from cluster.topology import Topology, load_topology
from tests.support.ports import free_ports

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0


def topology_toml(
    *,
    sticky: bool = True,
    policy: str = "sticky",
    roles: tuple[str, ...] = ("memcached", "appserver", "proxy"),
) -> str:
    """The classic two-host topology of cluster.toml, on free loopback ports."""
    n1, n2, app1, app2, proxy = free_ports(5)
    parts = []
    if "memcached" in roles:
        parts.append(f"""
[memcached]
memory = 16
[memcached.n1]
listen = "127.0.0.1:{n1}"
host = "host1"
[memcached.n2]
listen = "127.0.0.1:{n2}"
host = "host2"
""")
    if "appserver" in roles:
        failover = ('failover_nodes = "n1"', 'failover_nodes = "n2"') if sticky else ("", "")
        parts.append(f"""
[appserver]
memcached_nodes = "n1:127.0.0.1:{n1},n2:127.0.0.1:{n2}"
sticky = {"true" if sticky else "false"}
locking_mode = "{"none" if sticky else "auto"}"
operation_timeout = 0.5
[appserver.app1]
listen = "127.0.0.1:{app1}"
host = "host1"
jvm_route = "app1"
{failover[0]}
[appserver.app2]
listen = "127.0.0.1:{app2}"
host = "host2"
jvm_route = "app2"
{failover[1]}
""")
    if "proxy" in roles:
        parts.append(f"""
[proxy.proxy]
listen = "127.0.0.1:{proxy}"
upstreams = "app1=127.0.0.1:{app1},app2=127.0.0.1:{app2}"
policy = "{policy}"
# A restarted app is taken back within seconds rather than nginx's default 10 s.
fail_timeout = 2
health_interval = 0.5
""")
    return "".join(parts)


class PortTakenError(Exception):
    """Another process took one of the free ports between choosing and binding it."""


def launcher_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "cluster", *args]


def run_cli(*args: str, timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
    """`sessionha ARGS` as a user types it, in another process."""
    return subprocess.run(
        launcher_command(*args), capture_output=True, text=True, timeout=timeout, check=False
    )


@dataclass
class LocalCluster:
    """One `sessionha up` with its own topology file and run directory."""

    toml: str
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sha-")))
    process: subprocess.Popen[bytes] | None = None
    seen_pids: set[int] = field(default_factory=set)

    @property
    def config(self) -> Path:
        return self.workdir / "cluster.toml"

    @property
    def run_dir(self) -> Path:
        return self.workdir / "run"

    @property
    def log_path(self) -> Path:
        return self.workdir / "launcher.log"

    @property
    def topology(self) -> Topology:
        return load_topology(self.config)

    def address(self, name: str) -> str:
        return str(self.topology.member(name).listen)

    def url(self, path: str) -> str:
        return f"http://{self.address('proxy')}{path}"

    def start(self, output: int | None = None) -> LocalCluster:
        """Run `sessionha up`; its output goes to launcher.log, or to the file descriptor
        `output` (a terminal, say)."""
        self.config.write_text(self.toml, encoding="utf-8")
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                launcher_command("up", "--config", str(self.config), *self.options),
                stdin=subprocess.DEVNULL,
                stdout=log if output is None else output,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent(os.getpid()),  # a killed pytest leaves nothing
            )
        self.wait_until(
            lambda members: all(m.state == "running" for m in members),
            timeout=READY_TIMEOUT,
            what="every member running",
        )
        return self

    @property
    def options(self) -> tuple[str, ...]:
        """Where `sessionha status/kill/start` find this launcher."""
        return ("--run-dir", str(self.run_dir))

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        command, *rest = args
        return run_cli(command, *self.options, *rest)

    def status(self) -> list[MemberStatus]:
        members = request(self.run_dir / "control.sock", {"command": "status"}, timeout=10)
        self.seen_pids.update(m.pid for m in members if m.pid is not None)
        return members

    def member(self, name: str) -> MemberStatus:
        return next(m for m in self.status() if m.name == name)

    def wait_until(
        self, done: Callable[[list[MemberStatus]], bool], *, timeout: float, what: str
    ) -> list[MemberStatus]:
        deadline = time.monotonic() + timeout
        while True:
            if self.process is not None and self.process.poll() is not None:
                if "is already in use" in self.log_tail():
                    raise PortTakenError(self.log_tail())
                raise AssertionError(
                    f"launcher exited ({self.process.returncode}) before {what}:\n{self.log_tail()}"
                )
            with contextlib.suppress(ControlError):
                members = self.status()
                if done(members):
                    return members
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} after {timeout}s:\n{self.log_tail()}")
            time.sleep(0.1)

    def kill(self, name: str) -> None:
        """`sessionha kill NAME`, the way a user does it."""
        result = self.cli("kill", name)
        assert result.returncode == 0, result.stderr

    def start_member(self, name: str) -> None:
        result = self.cli("start", name)
        assert result.returncode == 0, result.stderr
        self.status()

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def _is_member(self, pid: int) -> bool:
        """Whether `pid` is still one of this cluster's members (not a reused pid): app
        servers and proxy name this config file, memcached one of its ports."""
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            return False
        ports = {str(m.listen.port) for m in self.topology.members}
        return str(self.config) in argv or any(arg in ports for arg in argv)

    def close(self) -> list[str]:
        """Stop everything; returns what had to be cleaned up by force (empty = clean)."""
        leaks: list[str] = []
        if self.process is not None:
            with contextlib.suppress(ControlError, OSError):
                self.status()
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    leaks.append("launcher ignored SIGTERM")
                    self.process.kill()
                    self.process.wait(timeout=10)
        for pid in sorted(self.seen_pids):
            if pid_alive(pid) and self._is_member(pid):
                leaks.append(f"member pid {pid} outlived the launcher")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            for member in self.topology.members:
                if port_bound(member.listen.host, member.listen.port):
                    leaks.append(f"port {member.listen.port} ({member.name}) still bound")
        if not leaks:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return leaks


def pid_alive(pid: int) -> bool:
    """True for a live process (a zombie waiting to be reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def port_bound(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False
