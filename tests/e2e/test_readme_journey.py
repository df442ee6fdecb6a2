"""The README's journey, every command block in order, against a real cluster.

The cluster is the README's own topology (cluster.toml) with its ports moved to free
ones, run from a directory that holds that topology and a `.venv` link to ours, so the
README's relative commands (`.venv/bin/sessionha status`, `curl -c jar`) work as typed.
`scripts/up` is its last line, `sessionha up`: installing is `.ci/run`'s part.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from cluster.spawn import die_with_parent
from cluster.topology import load_topology
from tests.support.ports import free_ports

from .journey import Matcher, Step, journey_section, move_ports, parse_steps, symmetric_pairs
from .launch import port_bound
from .terminal import Terminal

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
UP_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0


class FirstTerminal:
    """The terminal `scripts/up` runs in: the launcher, its output in a file."""

    def __init__(self, command: str, *, cwd: Path, env: Mapping[str, str]) -> None:
        argv = shlex.split(command)
        if argv[0] == "scripts/up":
            argv = [".venv/bin/sessionha", "up", *argv[1:]]
        self.log = cwd / "first-terminal.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                argv,
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent(os.getpid()),
            )

    def lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()

    def wait_for(self, step: Step, matcher: Matcher) -> None:
        deadline = time.monotonic() + UP_TIMEOUT
        while (problem := matcher.check(step, self.lines(), subset=True)) is not None:
            if self.process.poll() is not None:
                pytest.fail(f"the launcher exited ({self.process.returncode}):\n{problem}")
            if time.monotonic() > deadline:
                pytest.fail(f"after {UP_TIMEOUT}s:\n{problem}")
            time.sleep(0.1)

    def interrupt(self, step: Step, matcher: Matcher) -> None:
        """Ctrl-C: the launcher stops everything and exits 0, printing the README's lines."""
        before = len(self.lines())
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout=STOP_TIMEOUT)
        assert code == 0, "\n".join(self.lines()[-30:])
        problem = matcher.check(step, self.lines()[before:], subset=True)
        assert problem is None, problem

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()  # members get SIGKILL too: their parent-death signal
                self.process.wait(timeout=10)


def reader_environment() -> dict[str, str]:
    """The reader's environment, minus any `sessionha` on the PATH (an activated venv):
    the README says `.venv/bin/sessionha`, and so must the banner."""
    path = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    path = [d for d in path if not (Path(d) / "sessionha").exists()]
    return {**os.environ, "PATH": os.pathsep.join(path), "NO_COLOR": "1"}


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Short, for the control socket's path (at most 107 bytes).
    path = Path(tempfile.mkdtemp(prefix="sha-journey-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("browser_first", [False, True], ids=["as-written", "browser-first"])
def test_every_command_of_the_readme_journey_works_as_written(
    workdir: Path, browser_first: bool
) -> None:
    """browser-first: the reader opened /test in a browser before the curls, so the
    journey's session starts on the other server than the README shows."""
    steps = parse_steps(journey_section((REPO / "README.md").read_text(encoding="utf-8")))
    assert steps and steps[0].kind == "up" and steps[-1].kind == "interrupt", steps
    topology = load_topology(REPO / "cluster.toml")
    ports = {member.name: member.listen.port for member in topology.members}
    moves = dict(zip(ports.values(), free_ports(len(ports)), strict=True))
    (workdir / "cluster.toml").write_text(
        move_ports((REPO / "cluster.toml").read_text(encoding="utf-8"), moves), encoding="utf-8"
    )
    (workdir / ".venv").symlink_to(REPO / ".venv")
    env = reader_environment()
    matcher = Matcher(swap=symmetric_pairs(ports), moves=moves)
    second = Terminal(workdir, env)
    first: FirstTerminal | None = None
    browser: str | None = None
    try:
        for step in steps:
            if step.kind == "up":
                assert first is None, "one launcher at a time: ^C the first one before"
                first = FirstTerminal(move_ports(step.command, moves), cwd=workdir, env=env)
                first.wait_for(step, matcher)
            elif step.kind == "interrupt":
                assert first is not None, "^C with no launcher running"
                first.interrupt(step, matcher)
                first = None
            else:
                if browser_first and browser is None:
                    browser = visit(second, ports["proxy"], moves)
                status, output = second.run(move_ports(step.command, moves))
                assert status == 0, f"$ {step.command}\nexit status {status}:\n{output}"
                problem = matcher.check(step, output.splitlines())
                assert problem is None, problem
    finally:
        second.close()
        if first is not None:
            print("--- first terminal ---\n" + "\n".join(first.lines()[-60:]))
            first.close()
    # Stopping the cluster left nothing listening.
    deadline = time.monotonic() + 10
    while (bound := [p for p in moves.values() if port_bound("127.0.0.1", p)]) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.1)
    assert bound == [], f"ports still bound after ^C: {bound}"
    if browser_first:
        # Round robin gave the journey's session the other server: the README was read with
        # the hosts swapped exactly when the browser's visit went to app1.
        assert matcher.swapped is (browser == "app1")


def visit(terminal: Terminal, proxy_port: int, moves: Mapping[int, int]) -> str:
    """A browser's first visit (a new session, no cookie kept here); returns who answered."""
    url = f"http://127.0.0.1:{moves[proxy_port]}/test"
    status, output = terminal.run(f"curl -s -H 'Accept: application/json' {url}")
    assert status == 0, output
    return str(json.loads(output)["server"])


def test_the_journey_parser_reads_commands_outputs_and_ctrl_c() -> None:
    section = (
        "\n## The journey\n```console\n$ scripts/up\nn1 is healthy\n```\ntext\n"
        "```console\n$ echo hi\nhi\n$ true\n^C\nStopping\n```\n```sh\nnot run\n```\n"
    )
    steps = parse_steps(journey_section(section))
    assert [(s.kind, s.command, s.expected) for s in steps] == [
        ("up", "scripts/up", ("n1 is healthy",)),
        ("shell", "echo hi", ("hi",)),
        ("shell", "true", ()),
        ("interrupt", "", ("Stopping",)),
    ]


def test_outputs_match_with_the_hosts_swapped_until_a_new_session() -> None:
    ports = {"n1": 21211, "n2": 21212, "app1": 8081, "app2": 8082, "proxy": 8080}
    moves = {8080: 9000, 8081: 9001, 8082: 9002, 21211: 9011, 21212: 9012}
    matcher = Matcher(swap=symmetric_pairs(ports), moves=moves)
    readme_id = "F8F7F16D3CAC5F0A814B247C1E43E4E2"
    first = Step("shell", "curl", (f'{{"server": "app1", "address": "127.0.0.1:8081", '
                                   f'"session_id": "{readme_id}-n2.app1", "new": true}}',))
    actual = '{"server": "app2", "address": "127.0.0.1:9002", "session_id": "%s-n1.app2", '
    assert matcher.check(first, [actual % ("A" * 32) + '"new": true}']) is None
    assert matcher.swapped is True
    again = Step("shell", "curl", (first.expected[0].replace("true", "false"),))
    # The same session keeps its id; another id is a different session, and fails.
    assert matcher.check(again, [actual % ("A" * 32) + '"new": false}']) is None
    assert matcher.check(again, [actual % ("B" * 32) + '"new": false}']) is not None
    table = Step("shell", "status", ("app1 appserver 127.0.0.1:8081 - killed",
                                     "app2 appserver 127.0.0.1:8082 4964 running"))
    assert matcher.check(table, ["app1   appserver  127.0.0.1:9001   77  running",
                                 "app2   appserver  127.0.0.1:9002   -   killed"]) is None
    assert matcher.check(table, ["app1   appserver  127.0.0.1:9001   -   killed",
                                 "app2   appserver  127.0.0.1:9002   77  running"]) is not None

