"""Where a running launcher leaves its traces: the control socket and a state file.

The run directory defaults to `.sessionha/` next to the default topology file (the
repository root, or the current directory when it holds a cluster.toml), whichever
`--config` was given, so `up` and `status`/`kill`/`start` from another terminal find
each other without options.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import ClusterError
from .status import MemberStatus

CONFIG_NAME = "cluster.toml"
RUN_DIR_NAME = ".sessionha"
_UNIX_PATH_MAX = 107


def default_config() -> Path:
    """`cluster.toml` in the current directory, else the one at the repository root."""
    here = Path(CONFIG_NAME)
    if here.exists():
        return here.resolve()
    return Path(__file__).resolve().parent.parent / CONFIG_NAME


@dataclass(frozen=True)
class RunDir:
    path: Path

    @classmethod
    def choose(cls, override: Path | None = None) -> RunDir:
        return cls((override or default_config().parent / RUN_DIR_NAME).resolve())

    @property
    def control_socket(self) -> Path:
        return self.path / "control.sock"

    @property
    def state_file(self) -> Path:
        return self.path / "state.json"

    def prepare(self) -> None:
        if len(os.fsencode(self.control_socket)) > _UNIX_PATH_MAX:
            raise ClusterError(f"run directory path is too long for a unix socket: {self.path}")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ClusterError(f"cannot create run directory {self.path}: {error}") from None

    def write_state(
        self, *, launcher_pid: int, config: Path, members: Sequence[MemberStatus]
    ) -> None:
        """Atomically replaced, so a reader never sees half a file."""
        data = {
            "launcher_pid": launcher_pid,
            "config": str(config),
            "members": [m.to_json() for m in members],
        }
        temporary = self.state_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        temporary.replace(self.state_file)

    def clear(self) -> None:
        for path in (self.control_socket, self.state_file):
            path.unlink(missing_ok=True)
