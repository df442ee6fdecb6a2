"""The README's journey as steps, and how a step's output is compared with the README's.

A `console` block of the journey holds `$ COMMAND` lines, each followed by the output the
README shows for it, and `^C` (what a terminal echoes for Ctrl-C) followed by what the
launcher prints when it stops. `scripts/up` and `sessionha up` start the launcher in the
"first terminal"; every other command runs in the "second terminal".

Outputs are compared line by line, in any order (a status table lists the members in the
topology's order, which the host swap below reorders), after `normalize`: the random part
of a session id becomes `<idN>` (N: its rank of first appearance, so a session keeping its
id is checked), pids and clock times are free, runs of spaces are one.

The topology is symmetric: host 1 (app1, n1) and host 2 (app2, n2) swap without changing
any rule, and which host answers a new session is the proxy's round robin (or a browser
asked first). So an output may match the README read with the hosts swapped (`swap`);
once a step has matched one way, the following ones must too, until the next answer that
starts a new session (`"new": true`) lets the choice be made again.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

StepKind = Literal["up", "shell", "interrupt"]

_FENCE = re.compile(r"^```console\n(.*?)^```", re.MULTILINE | re.DOTALL)
_HEX_ID = re.compile(r"\b[0-9A-F]{32}\b")
_CLOCK = re.compile(r"\b\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\b|\b\d\d:\d\d:\d\d\b")
_PID = re.compile(r"\(pid \d+\)")
# NAME ROLE ADDRESS PID STATE, as `sessionha status` prints a member.
_TABLE_ROW = re.compile(r"^(\S+ +(?:memcached|appserver|proxy) +\S+ +)\d+( +\w+)$")
NEW_SESSION = '"new": true'


@dataclass(frozen=True)
class Step:
    kind: StepKind
    command: str  # empty for an interrupt
    expected: tuple[str, ...]


def journey_section(readme: str, heading: str = "## The journey") -> str:
    start = readme.index(f"\n{heading}\n")
    end = readme.find("\n## ", start + len(heading) + 2)
    return readme[start : end if end != -1 else len(readme)]


def parse_steps(section: str) -> list[Step]:
    steps: list[Step] = []
    for block in _FENCE.finditer(section):
        kind: StepKind | None = None
        command, expected = "", list[str]()
        for line in block[1].splitlines():
            if line.startswith("$ ") or line == "^C":
                if kind is not None:
                    steps.append(Step(kind, command, tuple(expected)))
                command, expected = line[2:], []
                kind = "interrupt" if line == "^C" else _command_kind(command)
            elif kind is None:
                raise ValueError(f"output before any command in a console block: {line!r}")
            else:
                expected.append(line)
        if kind is not None:
            steps.append(Step(kind, command, tuple(expected)))
    return steps


def _command_kind(command: str) -> StepKind:
    """`scripts/up ...` and `.../sessionha up ...` start the launcher; the rest is a shell's."""
    words = command.split() or [""]
    if words[0] == "scripts/up" or (words[0].endswith("sessionha") and words[1:2] == ["up"]):
        return "up"
    return "shell"


class Normalizer:
    """Rewrites one stream of outputs (the README's, or the actual one) for comparison."""

    def __init__(self) -> None:
        self.ids: dict[str, str] = {}

    def lines(self, text: Iterable[str], *, commit: bool = True) -> list[str]:
        ids = self.ids if commit else dict(self.ids)
        result = []
        for line in text:
            line = _HEX_ID.sub(lambda m: ids.setdefault(m[0], f"<id{len(ids) + 1}>"), line)
            line = _PID.sub("(pid <pid>)", _CLOCK.sub("<time>", line))
            line = " ".join(line.split())
            line = _TABLE_ROW.sub(r"\1<pid>\2", line)
            if line:
                result.append(line)
        return result


def symmetric_pairs(ports: Mapping[str, int]) -> dict[str, str]:
    """The host swap as text replacements: names, hosts and the members' ports."""
    pairs = {"app1": "app2", "n1": "n2", "host1": "host2"}
    swap: dict[str, str] = {}
    for one, two in pairs.items():
        swap[one], swap[two] = two, one
        if one in ports and two in ports:
            first, second = f":{ports[one]}", f":{ports[two]}"
            swap[first], swap[second] = second, first
    return swap


def swap_hosts(lines: Iterable[str], swap: Mapping[str, str]) -> list[str]:
    """`lines` with every name and port of `swap` replaced at once (whole words only)."""
    names = re.compile(
        "|".join(
            rf"(?<![\w]){re.escape(k)}(?![\w])" if not k.startswith(":") else rf"{re.escape(k)}\b"
            for k in sorted(swap, key=len, reverse=True)
        )
    )
    return [names.sub(lambda match: swap[match[0]], line) for line in lines]


def move_ports(text: str, moves: Mapping[int, int]) -> str:
    """`:OLD` -> `:NEW` for every port of the README's topology (the test's free ports)."""
    if not moves:
        return text
    pattern = re.compile(r"(?<=:)(" + "|".join(str(port) for port in moves) + r")\b")
    return pattern.sub(lambda match: str(moves[int(match[1])]), text)


class Matcher:
    """Compares each step's output with the README's, keeping the streams' state: the ids
    seen so far on both sides and whether the hosts are swapped."""

    def __init__(self, *, swap: Mapping[str, str], moves: Mapping[int, int]) -> None:
        self._swap = swap
        self._moves = moves
        self._expected = Normalizer()
        self._actual = Normalizer()
        self.swapped: bool | None = None

    def _choices(self, step: Step) -> list[bool]:
        if self.swapped is None:
            return [False, True]
        if any(NEW_SESSION in line for line in step.expected):
            return [self.swapped, not self.swapped]
        return [self.swapped]

    def expected(self, step: Step, swapped: bool) -> list[str]:
        lines = swap_hosts(step.expected, self._swap) if swapped else list(step.expected)
        return [move_ports(line, self._moves) for line in lines]

    def check(self, step: Step, actual: Iterable[str], *, subset: bool = False) -> str | None:
        """None when `actual` matches (all of it, or with `subset` at least the README's
        lines); otherwise what differs, for the assertion message."""
        actual = list(actual)
        seen = Counter(self._actual.lines(actual, commit=False))
        for swapped in self._choices(step):
            wanted = Counter(self._expected.lines(self.expected(step, swapped), commit=False))
            if (wanted <= seen) if subset else (wanted == seen):
                self._expected.lines(self.expected(step, swapped))
                self._actual.lines(actual)
                self.swapped = swapped
                return None
        shown = self.expected(step, bool(self.swapped))
        return (
            f"$ {step.command or '^C'}\nREADME says{' (hosts swapped)' if self.swapped else ''}:\n"
            + "\n".join(shown)
            + "\nbut got:\n"
            + "\n".join(actual)
        )
