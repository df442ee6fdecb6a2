"""How each member is started (pure): the command line and the user it runs as."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .topology import Member


@dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    # memcached refuses to run as root without `-u`, but `-u` makes it setuid itself,
    # which clears the parent-death signal; so the launcher drops to this user itself.
    user: str | None = None


def member_command(
    member: Member,
    *,
    config: Path,
    python: str,
    memcached: str,
    running_as_root: bool,
) -> Command:
    """The child process for one member; app servers and proxy read the same TOML."""
    if member.role == "memcached":
        argv = (
            memcached,
            "-l",
            member.listen.host,
            "-p",
            str(member.listen.port),
            "-U",
            "0",  # no UDP: nothing uses it and it would need a second free port
            "-m",
            str(member.memory_mb),
            "-I",
            member.item_size_limit,
        )
        return Command(argv, user="nobody" if running_as_root else None)
    module = "appserver" if member.role == "appserver" else "proxy"
    return Command((python, "-m", module, "--config", str(config), "--name", member.name))
