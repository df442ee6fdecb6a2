"""What `sessionha status` shows (pure): one record per member, as a table or as JSON."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, cast

# starting: spawned, not yet healthy; running: healthy; stopping: SIGTERM/SIGKILL sent;
# stopped: `stop` (SIGTERM); killed: `kill` (SIGKILL); exited: died on its own.
MemberState = Literal["starting", "running", "stopping", "stopped", "killed", "exited"]
STATES: tuple[MemberState, ...] = ("starting", "running", "stopping", "stopped", "killed", "exited")
COLUMNS = ("name", "role", "address", "pid", "state")


@dataclass(frozen=True)
class MemberStatus:
    name: str
    role: str
    address: str
    pid: int | None
    state: MemberState

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MemberStatus:
        state = data["state"]
        if state not in STATES:
            raise ValueError(f"unknown member state {state!r}")
        pid = data["pid"]
        return cls(
            str(data["name"]),
            str(data["role"]),
            str(data["address"]),
            None if pid is None else int(pid),
            cast(MemberState, state),
        )


def format_table(members: Sequence[MemberStatus]) -> str:
    """A fixed-width table with a header row, like `docker compose ps`."""
    rows: list[Iterable[str]] = [[column.upper() for column in COLUMNS]]
    rows += [
        [m.name, m.role, m.address, "-" if m.pid is None else str(m.pid), m.state] for m in members
    ]
    cells = [list(row) for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )
