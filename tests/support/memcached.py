"""Real memcached processes on free loopback ports."""

from __future__ import annotations

import shutil
import signal
import subprocess
from dataclasses import dataclass, field

from .ports import free_port, wait_for_port


@dataclass
class MemcachedProcess:
    """One memcached server owned by a test; `kill()` is a real SIGKILL."""

    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    memory_mb: int = 64
    item_size_limit: str = "1m"
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> MemcachedProcess:
        binary = shutil.which("memcached")
        if binary is None:
            raise RuntimeError("memcached is not installed: apt-get install memcached")
        self.process = subprocess.Popen(
            [binary, "-l", self.host, "-p", str(self.port), "-U", "0",
             "-m", str(self.memory_mb), "-I", self.item_size_limit, "-u", "nobody"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.host, self.port)
        return self

    def kill(self) -> None:
        """SIGKILL, as when the host dies; waits until the process is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def restart(self) -> MemcachedProcess:
        """Start again on the same port (empty, as a rebooted memcached is)."""
        self.kill()
        return self.start()
