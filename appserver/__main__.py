"""python -m appserver: one app server from a TOML topology or from the environment.

    python -m appserver --config cluster.toml --name app1
    LISTEN=127.0.0.1:8081 JVM_ROUTE=app1 MEMCACHED_NODES=n1:127.0.0.1:11211 python -m appserver

A bad or missing setting prints one line naming it and exits with status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from sessionstore import SettingsError

from .errors import ConfigError
from .logs import configure_logging
from .server import ListenError, serve
from .settings import AppServerSettings

EXIT_BAD_SETTING = 2
EXIT_CANNOT_LISTEN = 1


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop when installed, else asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m appserver",
        description="Run one app server (the Tomcat role) with memcached-backed sessions. "
        "Without --config every setting comes from upper-case environment variables "
        "(LISTEN, JVM_ROUTE, MEMCACHED_NODES, FAILOVER_NODES, STICKY, ...).",
    )
    parser.add_argument("--config", type=Path, help="TOML topology file, e.g. cluster.toml")
    parser.add_argument("--name", help="the member to run: the NAME of an [appserver.NAME] table")
    args = parser.parse_args(argv)
    if (args.config is None) != (args.name is None):
        parser.error("--config and --name go together")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.config is not None:
            settings = AppServerSettings.from_toml(args.config, args.name)
        else:
            settings = AppServerSettings.from_environ(os.environ)
    except (ConfigError, SettingsError) as exc:
        print(f"appserver: bad setting: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTING
    configure_logging()
    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            runner.run(serve(settings))
    except ListenError as exc:
        print(f"appserver: {exc}", file=sys.stderr)
        return EXIT_CANNOT_LISTEN
    return 0


if __name__ == "__main__":
    sys.exit(main())
