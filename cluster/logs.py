"""Member output as docker compose shows it: `app1   | line`, aligned, coloured on a TTY."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable
from typing import TextIO

_COLOURS = (36, 33, 32, 35, 34, 96, 93, 92, 95, 94)  # cyan, yellow, green, magenta, blue...
RECENT_LINES = 20


def wants_colour(stream: TextIO) -> bool:
    """Colours only for a terminal, and never when NO_COLOR is set (no-color.org)."""
    return stream.isatty() and "NO_COLOR" not in os.environ


def prefix(name: str, width: int, colour: int | None) -> str:
    label = f"{name.ljust(width)} | "
    return f"\x1b[{colour}m{label}\x1b[0m" if colour is not None else label


class LogPrinter:
    """Writes each member's lines under its prefix and keeps the last few for error reports."""

    def __init__(self, names: Iterable[str], stream: TextIO, *, colour: bool) -> None:
        names = list(names)
        self._stream = stream
        width = max((len(name) for name in names), default=0)
        self._prefixes = {
            name: prefix(name, width, _COLOURS[i % len(_COLOURS)] if colour else None)
            for i, name in enumerate(names)
        }
        self._recent: dict[str, deque[str]] = {name: deque(maxlen=RECENT_LINES) for name in names}

    def member_line(self, name: str, line: str) -> None:
        self._recent[name].append(line)
        self._write(f"{self._prefixes[name]}{line}\n")

    def launcher_line(self, line: str) -> None:
        self._write(f"{line}\n")

    def recent(self, name: str) -> list[str]:
        return list(self._recent[name])

    def _write(self, text: str) -> None:
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):  # the terminal went away (EPIPE, EIO): members keep running
            pass
