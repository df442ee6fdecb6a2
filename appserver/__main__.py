"""python -m appserver: one app server from a TOML topology or from the environment.

    python -m appserver --config cluster.toml --name app1
    LISTEN=127.0.0.1:8081 JVM_ROUTE=app1 MEMCACHED_NODES=n1:127.0.0.1:21211 python -m appserver

A bad or missing setting prints one line naming it and exits with status 2. `--help` lists
every setting with its default (`settings_reference()`, also the source of docs/reference.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from sessionstore import SessionStoreSettings, SettingsError
from settingsdoc import Reference, default_text, package_version, settings_epilog
from settingsdoc import settings_reference as settings_reference_of

from .errors import ConfigError
from .logs import configure_logging
from .server import ListenError, serve
from .settings import AppServerSettings, known_keys

EXIT_BAD_SETTING = 2
EXIT_CANNOT_LISTEN = 1


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop when installed, else asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


# What each setting means, for `--help` and docs/reference.md. tests/docs checks that every
# key the settings accept (known_keys()) is here and nothing else: a new key gets a line here.
MEANINGS: dict[str, str] = {
    "listen": 'host:port, e.g. "127.0.0.1:8081" (port 0: the system picks one)',
    "jvm_route": "this server's route: the suffix of its session ids, what the proxy sticks to",
    "memcached_nodes": '"n1:host:port,n2:host:port", or "dns:NAME:PORT" to discover the nodes',
    "failover_nodes": "sticky only: nodes used only when no other is alive (the memcached on "
    "this server's own host)",
    "sticky": "false: nothing is kept between requests; each request loads its session from "
    "memcached, and a bak: copy lives on the next node",
    "locking_mode": 'non-sticky: "none", "all", "auto" (not GET/HEAD) or "uriPattern:<regex>"; '
    "a lock is a memcached add",
    "lock_timeout": "a request that waits longer for its session's lock gets 503 with Retry-After",
    "request_uri_ignore_pattern": "paths that never load or back up a session (static files)",
    "session_backup_async": "true answers before the backup is written: faster, but a response "
    "no longer proves the write is in memcached",
    "session_backup_timeout": "how long a response waits for its backup (MSM's default is 0.1; "
    "ours outlasts operation_timeout)",
    "operation_timeout": "every memcached operation; a node that times out is marked dead",
    "node_retry_interval": "how long a dead memcached node is left alone before it is tried again",
    "storage_key_prefix": "prepended to every memcached key",
    "transcoder": '"json" or "msgpack" (never pickle)',
    "max_inactive_interval": "idle seconds before a session expires, in memory and in memcached",
    "session_cookie_name": "the session cookie; ;jsessionid= in the path works too (URL "
    "rewriting when no cookie came)",
    "max_session_size": "bytes; a larger session is refused with 413 and its earlier data stays",
    "resolver_valid": "with dns: nodes, how often the name is resolved again",
    "client_max_body_size": 'larger request bodies get 413 (bytes, or like "512k", "1m")',
    "shutdown_timeout": "on SIGTERM: stop accepting, finish requests in flight and flush async "
    "backups within this, then exit",
    "max_session_attributes": "a request that would store more attributes gets 413, data kept",
    "max_attribute_name_length": "a longer dataName gets 413",
    "access_log": "one line per request on stderr: nginx's combined format, then the request "
    "id (X-Request-ID) and the request time in seconds; the address is the client's as "
    "trusted_proxies decide",
    "log_format": '"text" (error lines `time logger LEVEL message`, access lines as above) or '
    '"json": every line, access and error, one JSON object',
    "max_active_sessions": "sticky sessions held in memory (Tomcat's maxActiveSessions; -1: no "
    "cap); beyond it the least recently used one memcached holds leaves memory and loads back "
    "on its next request",
    "session_create_rate": "new sessions per second per client address (a token bucket; 0: no "
    "limit); beyond it 429 with Retry-After",
    "session_create_burst": "how many new sessions a client address may create at once",
    "trusted_proxies": "peers whose X-Real-IP / X-Forwarded-For name the client (RemoteIpValve's "
    'internalProxies): addresses or CIDR networks; "" trusts no peer',
    "session_cookie_path": "the session cookie's Path (Tomcat's sessionCookiePath)",
    "session_cookie_domain": 'the session cookie\'s Domain, e.g. "example.com" for every '
    "subdomain; none: only the host that set it",
    "session_cookie_secure": '"auto" (Secure when the request is https, X-Forwarded-Proto '
    'counting from trusted_proxies), "always" or "never"',
    "session_cookie_same_site": '"Lax", "Strict" or "None" (None adds Secure: browsers refuse '
    "it without)",
    "session_cookie_http_only": "HttpOnly: page scripts cannot read the session cookie",
    "session_cookie_max_age": "the session cookie's Max-Age in seconds; 0: none, the cookie "
    "ends with the browser session",
    "tracking_modes": '"cookie,url" or "cookie": then ;jsessionid= in a request is ignored '
    "and never written into links and forms (ids in URLs leak into logs and Referer)",
    "max_session_lifetime": "seconds since creation after which a session is invalidated on "
    "its next request, wherever it is served, however active (0: no limit)",
}
# Keys whose default is not the dataclass field of the same name.
SHOWN_DEFAULTS = {"listen": "(required)", "session_cookie_domain": "(none)"}


def settings_reference() -> Reference:
    """(key, default, meaning) of every setting: MEANINGS' order, then keys it lacks."""
    classes = (AppServerSettings, SessionStoreSettings)
    return settings_reference_of(
        MEANINGS, known_keys(), lambda key: default_text(key, classes, SHOWN_DEFAULTS)
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m appserver",
        description="Run one app server (the Tomcat role) with memcached-backed sessions. "
        "Without --config every setting comes from upper-case environment variables "
        "(LISTEN, JVM_ROUTE, MEMCACHED_NODES, FAILOVER_NODES, STICKY, ...).",
        epilog=settings_epilog(settings_reference()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
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
    configure_logging(settings.log_format)
    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            runner.run(serve(settings))
    except ListenError as exc:
        print(f"appserver: {exc}", file=sys.stderr)
        return EXIT_CANNOT_LISTEN
    return 0


if __name__ == "__main__":
    sys.exit(main())
