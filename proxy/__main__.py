"""`python -m proxy --config cluster.toml --name proxy`, or settings from the environment.

`--help` lists every setting with its default (`settings_reference()`, also the source of
docs/reference.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import importlib.metadata
import json
import logging
import os
import signal
import sys
import textwrap
import tomllib

from proxy.errors import SettingsError
from proxy.server import ProxyServer
from proxy.settings import KNOWN_KEYS, ProxySettings, settings_from_environ, settings_from_toml

# What each setting means, for `--help` and docs/reference.md. tests/docs checks that every
# key the settings accept (KNOWN_KEYS) is here and nothing else: a new key gets a line here.
MEANINGS: dict[str, str] = {
    "listen": "host:port (port 0: the system picks one)",
    "upstreams": '"name=host:port[ weight=N],..." (the name is the app server\'s route), or '
    '"dns:NAME:PORT" to discover them',
    "policy": '"sticky" (by the route suffix of the session id) or "round_robin"',
    "session_cookie_name": "the cookie, and ;name= path parameter, whose route suffix is followed",
    "max_fails": "passive health: that many failures within fail_timeout take an upstream out "
    "for fail_timeout (0: off)",
    "fail_timeout": "passive health: the window failures are counted in, and how long the "
    "upstream then stays out",
    "health_path": "active health: what is asked of each upstream",
    "health_interval": "active health: seconds between checks (0: off)",
    "health_timeout": "active health: how long one check may take",
    "fall": "active health: out after that many failed checks",
    "rise": "active health: back after that many good checks",
    "next_upstream_tries": "retries (0: every upstream once): refused or reset before sending "
    "always go to the next; timeouts and 502/503/504 only for idempotent requests without a body",
    "keepalive": "idle upstream connections kept per server",
    "keepalive_timeout": "idle timeout of client connections and of pooled upstream connections",
    "client_max_body_size": 'larger bodies get 413 (bytes, or like "512k", "1m"; 0: no limit)',
    "proxy_connect_timeout": "connecting to an upstream; then the next one, or 502",
    "proxy_read_timeout": "waiting for an upstream's answer; then 504",
    "client_header_timeout": "a client trickling its request head is cut off",
    "client_body_timeout": "a client trickling its request body is cut off",
    "send_timeout": "a client not reading the answer is cut off",
    "status_prefix": "where the status page, status.json and metrics live",
    "resolver_valid": "with dns: upstreams, how often the name is resolved again",
    "set_real_ip_from": "peers (CIDRs or addresses, comma-separated) whose X-Forwarded-* and "
    "real_ip_header are believed; from anyone else they are replaced",
    "real_ip_header": "with set_real_ip_from: the header naming the client (its last address)",
}
_FIELDS = {field.name: field for field in dataclasses.fields(ProxySettings)}
# Keys whose default is not the dataclass field of the same name.
SHOWN_DEFAULTS = {
    "listen": json.dumps(f"{_FIELDS['listen_host'].default}:{_FIELDS['listen_port'].default}"),
    "upstreams": "(required)",
    "set_real_ip_from": '"" (nobody)',
}


def toml_literal(value: object) -> str:
    """A default as the TOML file would write it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    return "(none)" if value is None else str(value)


def default_text(key: str) -> str | None:
    """The default of `key` as TOML writes it, "(required)", or None when it is unknown."""
    if key in SHOWN_DEFAULTS:
        return SHOWN_DEFAULTS[key]
    field = _FIELDS.get(key)
    if field is None:
        return None
    if field.default is not dataclasses.MISSING:
        return toml_literal(field.default)
    if field.default_factory is not dataclasses.MISSING:
        return toml_literal(field.default_factory())
    return "(required)"


def settings_reference() -> list[tuple[str, str, str]]:
    """(key, default, meaning) of every setting: MEANINGS' order, then keys it lacks."""
    ordered = [key for key in MEANINGS if key in KNOWN_KEYS] + sorted(KNOWN_KEYS - MEANINGS.keys())
    return [(key, default_text(key) or "?", MEANINGS.get(key, "?")) for key in ordered]


def settings_epilog() -> str:
    lines = ["settings (TOML keys, or upper case in the environment; durations in seconds):"]
    for key, default, meaning in settings_reference():
        lines.append(f"  {key} {default}" if default.startswith("(") else f"  {key} = {default}")
        lines += textwrap.wrap(meaning, 79, initial_indent=" " * 6, subsequent_indent=" " * 6)
    return "\n".join(lines)


def package_version() -> str:
    try:
        return importlib.metadata.version("sessionha")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def load_settings(argv: list[str] | None = None) -> ProxySettings:
    parser = argparse.ArgumentParser(
        prog="python -m proxy",
        description="Run the proxy (the nginx role). Without --config every setting comes from "
        "upper-case environment variables (LISTEN, UPSTREAMS, POLICY, ...).",
        epilog=settings_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
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
