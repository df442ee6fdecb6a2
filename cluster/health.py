"""Is a member healthy? memcached answers `version`; app servers and the proxy answer HTTP.

The HTTP probe is the proxy's own health check (one probe for the whole project), asked for
the app server's `/health` and for the proxy's `<status_prefix>/status.json`, the prefix
read from the proxy's settings as the proxy itself reads them.
"""

from __future__ import annotations

import asyncio
import contextlib
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
    spec = UpstreamSpec(name=member.name, host=host, port=port)
    path = health_path(member)
    return lambda: check_upstream(spec, path, PROBE_TIMEOUT)
