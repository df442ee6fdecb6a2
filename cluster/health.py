"""Is a member healthy? memcached answers `version`; app servers and the proxy answer HTTP.

The HTTP probe is the proxy's own health check (one probe for the whole project), asked for
the app server's `/health` and for the proxy's `<status_prefix>/status.json`, the prefix
read from the proxy's settings as the proxy itself reads them. A proxy that listens with
ssl only is asked over TLS, without checking its certificate (the launcher asks whether
it is up, not whether it is who it says).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable

from proxy import ProxySettings, SettingsError, UpstreamSpec, check_upstream, settings_from_toml

from .topology import Member

PROBE_TIMEOUT = 1.0
APPSERVER_HEALTH_PATH = "/health"  # a route of every app server (ARCHITECTURE.md)


def status_prefix(proxy: Member) -> str:
    """Where a proxy member serves its status pages, as the proxy reads its own settings."""
    try:
        settings = settings_from_toml({"proxy": {proxy.name: dict(proxy.settings)}}, proxy.name)
    except SettingsError:
        # The proxy refuses these settings and exits with its own one-line error, which the
        # launcher reports; until then it is simply not healthy.
        settings = ProxySettings()
    return settings.status_prefix


def health_path(member: Member) -> str:
    """What an app server or a proxy member is asked to prove it is healthy."""
    if member.role == "appserver":
        return APPSERVER_HEALTH_PATH
    return f"{status_prefix(member)}/status.json"


async def memcached_answers(host: str, port: int, *, within: float = PROBE_TIMEOUT) -> bool:
    """True when memcached accepts a connection and answers `version`."""
    try:
        async with asyncio.timeout(within):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(b"version\r\n")
                await writer.drain()
                line = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, TimeoutError):
        return False
    return line.startswith(b"VERSION ")


Probe = Callable[[], Awaitable[tuple[bool, str]]]


def probe_for(member: Member) -> Probe:
    """The member's health check: awaiting it gives (healthy, why not)."""
    host, port = member.listen.connect_host, member.listen.port
    if member.role == "memcached":

        async def memcached() -> tuple[bool, str]:
            if await memcached_answers(host, port):
                return True, ""
            return False, "no answer to version"

        return memcached
    path = health_path(member)
    if member.listen_is_ssl:
        return lambda: https_answers(host, port, path)
    spec = UpstreamSpec(name=member.name, host=host, port=port)
    return lambda: check_upstream(spec, path, PROBE_TIMEOUT)


async def https_answers(
    host: str, port: int, path: str, *, within: float = PROBE_TIMEOUT
) -> tuple[bool, str]:
    """(True, "") when `GET path` over TLS answers 200."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        async with asyncio.timeout(within):
            reader, writer = await asyncio.open_connection(host, port, ssl=context)
            try:
                writer.write(
                    f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
                )
                await writer.drain()
                line = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(OSError, ssl.SSLError):
                    await writer.wait_closed()
    except (OSError, TimeoutError) as error:
        return False, f"no TLS answer: {error or type(error).__name__}"
    if line.split(b" ")[1:2] != [b"200"]:
        return False, f"answered {line.strip().decode(errors='replace')!r}"
    return True, ""
