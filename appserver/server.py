"""Run one app server until SIGTERM/SIGINT, then shut down gracefully within a bound.

Shutdown order: stop listening, let requests in flight finish, then the app's cleanup
(sessionstore flushes pending asynchronous backups and closes its memcached clients).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys

from aiohttp import web

from netnames import address_text
from sessionstore.client_address import TrustedProxies

from .app import REQUESTS_KEY, create_app
from .logs import ACCESS_LOGGER, access_logger_class
from .settings import AppServerSettings
from .traffic import RequestTracker

logger = logging.getLogger("appserver")

# Time kept back from shutdown_timeout for the cleanup after the last request finished.
_CLEANUP_RESERVE = 0.5


class ListenError(Exception):
    """The listen address cannot be bound (in use, not local, no permission)."""


async def serve(settings: AppServerSettings) -> None:
    """Serve until SIGTERM or SIGINT; return once shut down (at most shutdown_timeout later)."""
    # Requests in flight get the shutdown time minus what the cleanup after them may need.
    handler_grace = max(
        0.1, settings.shutdown_timeout - settings.session.session_backup_timeout - _CLEANUP_RESERVE
    )
    app = create_app(settings)
    requests = app[REQUESTS_KEY]
    runner = web.AppRunner(
        app,
        access_log=logging.getLogger(ACCESS_LOGGER) if settings.access_log else None,
        access_log_class=access_logger_class(
            trusted=TrustedProxies(settings.session.trusted_networks),
            log_format=settings.log_format,
            stream=sys.stderr,
        ),
        handle_signals=False,
        shutdown_timeout=0.1,  # by then our own drain has let the requests in flight finish
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.listen_host, settings.listen_port, backlog=1024)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ListenError(f"listen: cannot bind {settings.listen}: {exc.strerror}") from None

    # What start-up made (modules, the app, the settings) lives as long as the process: out
    # of the collector's way, so that a full collection does not walk it all again.
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    logger.info(
        "appserver %s listening on %s", settings.jvm_route, ", ".join(bound_addresses(runner))
    )
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        logger.info("appserver %s stopping", settings.jvm_route)
        try:
            async with asyncio.timeout(settings.shutdown_timeout):
                await stop_gracefully(runner, requests, handler_grace)
        except TimeoutError:
            logger.warning(
                "appserver %s: shutdown took longer than %gs, exiting anyway",
                settings.jvm_route,
                settings.shutdown_timeout,
            )
    logger.info("appserver %s stopped", settings.jvm_route)


async def stop_gracefully(runner: web.AppRunner, requests: RequestTracker, grace: float) -> None:
    """Stop listening, let requests in flight finish (bounded by `grace`), then clean up.

    aiohttp's runner.cleanup() alone stops reading every connection at once, which would
    strand a request whose body is still arriving; so the listeners close first and the
    requests drain while their connections still read.
    """
    for site in runner.sites:
        await site.stop()
    try:
        async with asyncio.timeout(grace):
            await requests.drain()
    except TimeoutError:
        logger.warning(
            "%d requests still in flight after %gs; cancelling them", requests.in_flight, grace
        )
    await runner.cleanup()  # idle connections closed, then sessionstore flushes and closes


def bound_addresses(runner: web.AppRunner) -> list[str]:
    """host:port of every listening socket (the real port when LISTEN asked for port 0)."""
    addresses = []
    for address in runner.addresses:
        host, port = address[0], address[1]
        addresses.append(address_text(host, port))
    return addresses
