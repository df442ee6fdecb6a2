"""A shell that keeps its state between commands, like a terminal a reader types into."""

from __future__ import annotations

import os
import secrets
import select
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from cluster.spawn import die_with_parent

COMMAND_TIMEOUT = 60.0


class Terminal:
    """One `bash` for a sequence of commands: variables set by one are seen by the next.
    Each command's output (stdout and stderr together) ends at a marker line that also
    carries its exit status."""

    def __init__(self, cwd: Path, env: Mapping[str, str]) -> None:
        self._marker = f"__journey_{secrets.token_hex(8)}__"
        self._process = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=dict(env),
            preexec_fn=die_with_parent(os.getpid()),
        )
        self._pending = b""

    def run(self, command: str, *, timeout: float = COMMAND_TIMEOUT) -> tuple[int, str]:
        """(exit status, output) of one command line."""
        assert self._process.stdin is not None and self._process.stdout is not None
        # The marker starts on a new line even when the output does not end with one (curl).
        script = f"{command}\nprintf '\\n{self._marker} %d\\n' $?\n"
        self._process.stdin.write(script.encode())
        self._process.stdin.flush()
        deadline = time.monotonic() + timeout
        fd = self._process.stdout.fileno()
        data = self._pending
        end = f"\n{self._marker} ".encode()
        while end not in data or b"\n" not in data.partition(end)[2]:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError(f"no end of {command!r} after {timeout}s; so far: {data!r}")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise EOFError(f"the shell exited during {command!r}; output: {data!r}")
            data += chunk
        output, _, rest = data.partition(end)
        status, _, self._pending = rest.partition(b"\n")
        return int(status), output.decode("utf-8", "replace")

    def close(self) -> None:
        if self._process.poll() is None:
            assert self._process.stdin is not None
            self._process.stdin.close()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=5)
        if self._process.stdout is not None:
            self._process.stdout.close()
