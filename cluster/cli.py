"""`sessionha`: up, status, kill, stop, start. Every error is one line and a non-zero exit."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from settingsdoc import package_version

from .control import request
from .errors import ClusterError
from .launcher import up
from .rundir import RunDir, default_config
from .status import format_table
from .topology import MEMBER_KEYS

START_TIMEOUT = 60.0  # the launcher answers `start` once the member is healthy
STATUS_TIMEOUT = 10.0


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see: {self.prog} --help)\n")


def topology_epilog() -> str:
    """`up --help`: the keys the launcher reads, from the table docs/reference.md shows too."""
    lines = [
        "topology: each [ROLE.NAME] table is one member (ROLE: memcached, appserver, proxy);",
        "the scalar keys of a [ROLE] table are defaults for its members. The launcher reads:",
    ]
    for key, default, meaning in MEMBER_KEYS:
        lines.append(f"  {key} {default}" if default.startswith("(") else f"  {key} = {default}")
        lines += textwrap.wrap(meaning, 79, initial_indent=" " * 6, subsequent_indent=" " * 6)
    lines += [
        "Every other key is the member's own setting: see python -m appserver --help and",
        "python -m proxy --help (the same list: docs/reference.md).",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sessionha", description="Run the local sessionha cluster.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    def add(name: str, help_text: str, epilog: str | None = None) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.add_argument(
            "--run-dir",
            type=Path,
            default=None,
            help="control socket and state (default: .sessionha/ next to the default topology)",
        )
        return sub

    up_parser = add(
        "up", "start every member, stream their logs, stop them all on Ctrl-C", topology_epilog()
    )
    up_parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML topology (default: cluster.toml here, else the repository's)",
    )
    up_parser.add_argument(
        "--health-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long each member may take to become healthy (default 30)",
    )
    status = add("status", "show the members of the running cluster")
    status.add_argument(
        "--json", action="store_true", help='a JSON list of {"name","role","address","pid","state"}'
    )
    for name, help_text in (
        ("kill", "SIGKILL a member, as when its machine dies"),
        ("stop", "SIGTERM a member and wait until it has stopped"),
        ("start", "start a stopped member and wait until it is healthy"),
    ):
        add(name, help_text).add_argument("member", metavar="MEMBER")
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.command == "up":
        if args.health_timeout <= 0:
            raise ClusterError("--health-timeout must be positive")
        config: Path = args.config or default_config()
        return up(config, args.run_dir, health_timeout=args.health_timeout)
    socket_path = RunDir.choose(args.run_dir).control_socket
    if args.command == "status":
        members = request(socket_path, {"command": "status"}, timeout=STATUS_TIMEOUT)
        if args.json:
            print(json.dumps([m.to_json() for m in members]))
        else:
            print(format_table(members))
        return 0
    timeout = START_TIMEOUT if args.command == "start" else STATUS_TIMEOUT
    members = request(
        socket_path, {"command": args.command, "member": args.member}, timeout=timeout
    )
    state = next(m.state for m in members if m.name == args.member)
    print(f"{args.member} {state}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except ClusterError as error:
        print(f"sessionha: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
