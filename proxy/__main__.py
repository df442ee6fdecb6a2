"""`python -m proxy --config cluster.toml --name proxy`, or settings from the environment."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import tomllib

from proxy.errors import SettingsError
from proxy.server import ProxyServer
from proxy.settings import ProxySettings, settings_from_environ, settings_from_toml


def load_settings(argv: list[str] | None = None) -> ProxySettings:
    parser = argparse.ArgumentParser(prog="python -m proxy", description=__doc__)
    parser.add_argument("--config", help="TOML topology file (else environment variables)")
    parser.add_argument("--name", default="proxy", help="member name under [proxy]")
    args = parser.parse_args(argv)
    if args.config is None:
        return settings_from_environ(os.environ)
    try:
        with open(args.config, "rb") as handle:
            document = tomllib.load(handle)
    except OSError as error:
        raise SettingsError("config", args.config, error.strerror or str(error)) from None
    except tomllib.TOMLDecodeError as error:
        raise SettingsError("config", args.config, f"not valid TOML: {error}") from None
    return settings_from_toml(document, args.name)


async def serve(settings: ProxySettings) -> None:
    # Requests allocate many short-lived containers and few cycles: collect less often.
    gc.freeze()
    gc.set_threshold(50_000, 50, 50)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if settings.discovery is not None:
        upstreams = f"{settings.discovery.label} (every {settings.resolver_valid:g}s)"
    else:
        upstreams = ", ".join(f"{u.name}={u.address}" for u in settings.upstreams)
    async with ProxyServer(settings) as proxy:
        print(
            f"proxy listening on {settings.listen_host}:{proxy.port}, "
            f"upstreams {upstreams}, "
            f"policy {settings.policy}",
            file=sys.stderr,
            flush=True,
        )
        await stop.wait()
        await proxy.close(grace=5.0)


def main(argv: list[str] | None = None) -> int:
    try:
        settings = load_settings(argv)
    except SettingsError as error:
        print(f"proxy: {error}", file=sys.stderr)
        return 2
    # One line per event (upstreams discovered, drained, DNS problems) on stderr.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(serve(settings))
    except OSError as error:
        print(
            f"proxy: cannot listen on {settings.listen_host}:{settings.listen_port}: "
            f"{error.strerror}",
            file=sys.stderr,
        )
        return 1
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
