"""Child processes that cannot outlive the launcher, even when it is SIGKILLed.

Linux delivers the parent-death signal (prctl PR_SET_PDEATHSIG) to a child when the
thread that forked it dies; the launcher forks from its event-loop (main) thread.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping

from .commands import Command

_PR_SET_PDEATHSIG = 1
OUTPUT_LINE_LIMIT = 1 << 20


def die_with_parent(parent_pid: int) -> Callable[[], None]:
    """A `preexec_fn` that makes the child receive SIGKILL when `parent_pid` dies."""

    def preexec() -> None:  # runs in the child between fork and exec, after setuid
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the launcher died before prctl took effect
            os._exit(1)

    return preexec


async def spawn(command: Command, *, env: Mapping[str, str]) -> asyncio.subprocess.Process:
    """Start `command` with stdout+stderr on one pipe, stdin closed, in its own session
    (so a Ctrl-C in the terminal reaches only the launcher, which stops members in order)."""
    preexec = die_with_parent(os.getpid()) if sys.platform == "linux" else None
    return await asyncio.create_subprocess_exec(
        *command.argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(env),
        user=command.user,
        start_new_session=True,
        preexec_fn=preexec,
        limit=OUTPUT_LINE_LIMIT,
    )
