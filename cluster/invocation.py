"""How the user runs this sessionha again from another terminal, for the advice we print.

`scripts/up` runs `.venv/bin/sessionha`, which is not on the PATH, so the advice names the
script the way it can be typed in the directory the launcher was started from.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def typed(path: Path) -> str:
    """`path` relative to the current directory when it lies inside it, else absolute."""
    absolute = Path(os.path.abspath(path))  # not resolve(): keep .venv/bin, not the interpreter
    try:
        relative = str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)
    return relative if os.sep in relative else f".{os.sep}{relative}"  # ./x, not a PATH lookup


def cli_command(argv0: str | None = None) -> str:
    """`sessionha` when that is what the PATH finds, else the path of this one."""
    script = Path(argv0 if argv0 is not None else sys.argv[0])
    if script.name == "__main__.py":  # python -m cluster
        return f"{typed(Path(sys.executable))} -m cluster"
    on_path = shutil.which("sessionha")
    if on_path is not None and Path(on_path).resolve() == script.resolve():
        return "sessionha"
    return typed(script)
