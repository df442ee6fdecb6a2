"""The running members: start each as a child, watch it, stop, kill and restart it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Mapping
from pathlib import Path

from .commands import Command, member_command
from .errors import MemberError
from .health import probe_for
from .logs import LogPrinter
from .spawn import spawn
from .status import MemberState, MemberStatus
from .topology import ROLES, Member, Topology

HEALTH_POLL_INTERVAL = 0.05
STOP_GRACE = 5.0
ALIVE: frozenset[MemberState] = frozenset({"starting", "running", "stopping"})


def describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


class MemberProcess:
    """One member and its current process (there is none while it is stopped)."""

    def __init__(self, member: Member, command: Command) -> None:
        self.member = member
        self.command = command
        self.state: MemberState = "stopped"
        self.process: asyncio.subprocess.Process | None = None
        self.requested: MemberState | None = None  # set when the launcher sends the signal
        self.exited = asyncio.Event()
        self.lock = asyncio.Lock()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def signal(self, sig: signal.Signals) -> None:
        """Signal the member's whole process group (it runs in its own session)."""
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)

    def status(self) -> MemberStatus:
        pid = self.process.pid if self.process is not None and self.state in ALIVE else None
        return MemberStatus(
            self.member.name, self.member.role, str(self.member.listen), pid, self.state
        )


class Cluster:
    """Starts members by role (memcached, then app servers, then proxy), stops them in
    reverse order, and keeps each one's state for `status`."""

    def __init__(
        self,
        topology: Topology,
        *,
        config: Path,
        python: str,
        memcached: str | None,
        running_as_root: bool,
        env: Mapping[str, str],
        log: LogPrinter,
        health_timeout: float,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.topology = topology
        self._env = {**env, "PYTHONUNBUFFERED": "1"}
        self._log = log
        self._health_timeout = health_timeout
        self._on_change = on_change
        self._tasks: set[asyncio.Task[None]] = set()
        self._members = {
            member.name: MemberProcess(
                member,
                member_command(
                    member,
                    config=config,
                    python=python,
                    memcached=memcached or "memcached",
                    running_as_root=running_as_root,
                ),
            )
            for member in topology.members
        }

    def statuses(self) -> list[MemberStatus]:
        return [member.status() for member in self._members.values()]

    def _get(self, name: str) -> MemberProcess:
        try:
            return self._members[name]
        except KeyError:
            raise MemberError(
                f"unknown member {name!r} (members: {', '.join(self._members)})"
            ) from None

    def _set_state(self, member: MemberProcess, state: MemberState) -> None:
        member.state = state
        self._on_change()

    async def start_all(self) -> None:
        """Each role's members together; the next role only once they are all healthy."""
        for role in ROLES:
            names = [m.name for m in self.topology.of_role(role)]
            results = await asyncio.gather(
                *(self.start(name) for name in names), return_exceptions=True
            )
            for result in results:
                if isinstance(result, BaseException):
                    raise result

    async def start(self, name: str) -> None:
        member = self._get(name)
        async with member.lock:
            if member.state in ALIVE:
                raise MemberError(f"{name} is already {member.state}")
            try:
                process = await spawn(member.command, env=self._env)
            except (OSError, KeyError) as error:  # KeyError: no such user as Command.user
                self._set_state(member, "exited")
                raise MemberError(
                    f"{name}: cannot start {member.command.argv[0]}: {error}"
                ) from None
            member.process, member.requested = process, None
            member.exited = asyncio.Event()
            self._set_state(member, "starting")
            task = asyncio.create_task(self._watch(member, process))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            await self._wait_healthy(member, process)
            if process.returncode is None and member.state == "starting":
                self._set_state(member, "running")
                self._log.launcher_line(
                    f"{name} is healthy on {member.member.listen} (pid {process.pid})"
                )

    async def _wait_healthy(
        self, member: MemberProcess, process: asyncio.subprocess.Process
    ) -> None:
        name = member.member.name
        probe = probe_for(member.member)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._health_timeout
        while True:
            if process.returncode is not None:
                await member.exited.wait()
                raise MemberError(self._start_failure(name, describe_exit(process.returncode)))
            healthy, why = await probe()
            if healthy:
                return
            if loop.time() > deadline:
                member.requested = "exited"
                member.signal(signal.SIGKILL)
                await member.exited.wait()
                raise MemberError(
                    self._start_failure(
                        name, f"was not healthy after {self._health_timeout:g}s ({why})"
                    )
                )
            await asyncio.sleep(HEALTH_POLL_INTERVAL)

    def _start_failure(self, name: str, what: str) -> str:
        recent = [line for line in self._log.recent(name) if line.strip()]
        hint = f"; last output: {recent[-1].strip()}" if recent else ""
        return f"{name} {what} while starting{hint}"

    async def _watch(self, member: MemberProcess, process: asyncio.subprocess.Process) -> None:
        """Stream the member's output under its prefix, then record how it ended."""
        name, exited = member.member.name, member.exited
        assert process.stdout is not None
        while True:
            try:
                raw = await process.stdout.readline()
            except ValueError:  # a line longer than the limit: show it in pieces
                raw = await process.stdout.read(65536)
            if not raw:
                break
            self._log.member_line(name, raw.decode("utf-8", "replace").rstrip("\r\n"))
        code = await process.wait()
        self._log.launcher_line(f"{name} {describe_exit(code)}")
        if member.process is process:
            self._set_state(member, member.requested or "exited")
        exited.set()

    async def stop(self, name: str) -> None:
        """SIGTERM, as `docker stop` does; SIGKILL if it has not exited after the grace."""
        await self._end(self._get(name), signal.SIGTERM, "stopped")

    async def kill(self, name: str) -> None:
        """SIGKILL, as when the machine dies."""
        await self._end(self._get(name), signal.SIGKILL, "killed")

    async def _end(self, member: MemberProcess, sig: signal.Signals, final: MemberState) -> None:
        # No lock: a member stuck while starting can be killed at once.
        if not member.alive:
            raise MemberError(f"{member.member.name} is not running ({member.state})")
        member.requested = final
        self._set_state(member, "stopping")
        member.signal(sig)
        exited = member.exited
        try:
            async with asyncio.timeout(STOP_GRACE):
                await exited.wait()
        except TimeoutError:
            member.signal(signal.SIGKILL)
            await exited.wait()

    async def shutdown(self) -> None:
        """Stop every live member, proxy first and memcached last."""
        for role in reversed(ROLES):
            live = [m for m in self._members.values() if m.member.role == role and m.alive]
            await asyncio.gather(
                *(self._end(m, signal.SIGTERM, "stopped") for m in live), return_exceptions=True
            )
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def kill_all_now(self) -> None:
        """Last resort (second Ctrl-C, or an error while starting): SIGKILL everything."""
        for member in self._members.values():
            if member.alive:
                member.requested = "killed"
                member.signal(signal.SIGKILL)
