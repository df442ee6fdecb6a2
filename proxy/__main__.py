"""`python -m proxy --config cluster.toml --name proxy`, or settings from the environment.

`--help` lists every setting with its default (`settings_reference()`, also the source of
docs/reference.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import dataclasses
import gc
import json
import logging
import os
import signal
import sys
import tomllib

from proxy.access_log import JsonFormatter
from proxy.errors import SettingsError, TlsError
from proxy.server import ProxyServer
from proxy.settings import KNOWN_KEYS, ProxySettings, settings_from_environ, settings_from_toml
from proxy.tls import CertificateStore
from settingsdoc import Reference, default_text, package_version, settings_epilog
from settingsdoc import settings_reference as settings_reference_of

# What each setting means, for `--help` and docs/reference.md. tests/docs checks that every
# key the settings accept (KNOWN_KEYS) is here and nothing else: a new key gets a line here.
MEANINGS: dict[str, str] = {
    "listen": 'host:port, each optionally followed by " ssl", comma-separated (port 0: the '
    "system picks one); the first is the proxy's address",
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
    "ssl_certificate": "PEM file of the certificate, then its chain, served by every ssl "
    "listener; re-read on SIGHUP (a broken one leaves the previous one in use)",
    "ssl_certificate_key": "PEM file of ssl_certificate's private key (not encrypted)",
    "ssl_protocols": "TLS versions offered, a contiguous range of TLSv1 TLSv1.1 TLSv1.2 TLSv1.3",
    "ssl_ciphers": "OpenSSL cipher list for TLS 1.2 and older (default: Mozilla intermediate)",
    "redirect_to_https": "plain listeners answer 301 to the same host and path on the first ssl "
    "listener (status_prefix and health_path excepted)",
    "hsts_max_age": "seconds of Strict-Transport-Security sent on ssl listeners (0: off)",
    "access_log": "off, stdout, stderr or a file: nginx's combined format, then the "
    "X-Request-ID and the seconds until the upstream answered",
    "log_format": "text, or json: every log line (access and events) one JSON object",
}
_DEFAULTS = ProxySettings()
# Keys whose default is not the dataclass field of the same name.
SHOWN_DEFAULTS = {
    "listen": json.dumps(",".join(str(listener) for listener in _DEFAULTS.listeners)),
    "ssl_protocols": json.dumps(" ".join(_DEFAULTS.ssl_protocols)),
    "ssl_certificate": "(none)",
    "ssl_certificate_key": "(none)",
    "upstreams": "(required)",
    "set_real_ip_from": '"" (nobody)',
}


def settings_reference() -> Reference:
    """(key, default, meaning) of every setting: MEANINGS' order, then keys it lacks."""
    return settings_reference_of(
        MEANINGS, KNOWN_KEYS, lambda key: default_text(key, (ProxySettings,), SHOWN_DEFAULTS)
    )


def load_settings(argv: list[str] | None = None) -> ProxySettings:
    parser = argparse.ArgumentParser(
        prog="python -m proxy",
        description="Run the proxy (the nginx role). Without --config every setting comes from "
        "upper-case environment variables (LISTEN, UPSTREAMS, POLICY, ...).",
        epilog=settings_epilog(settings_reference()),
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
    settings = settings_from_toml(document, args.name)
    # A certificate named in a topology file is found next to it, wherever the proxy runs.
    base = os.path.dirname(os.path.abspath(args.config))
    return dataclasses.replace(
        settings,
        ssl_certificate=settings.ssl_certificate and os.path.join(base, settings.ssl_certificate),
        ssl_certificate_key=settings.ssl_certificate_key
        and os.path.join(base, settings.ssl_certificate_key),
    )


def certificate_store(settings: ProxySettings) -> CertificateStore | None:
    """The one certificate every ssl listener serves (None without ssl listeners); TlsError
    names the file that cannot be used."""
    if not settings.ssl_listeners:
        return None
    return CertificateStore(
        settings.ssl_certificate,
        settings.ssl_certificate_key,
        protocols=settings.ssl_protocols,
        ciphers=settings.ssl_ciphers,
    )


async def serve(settings: ProxySettings, store: CertificateStore | None = None) -> None:
    # Requests allocate many short-lived containers and few cycles: collect less often.
    gc.freeze()
    gc.set_threshold(50_000, 50, 50)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if store is not None:
        # As nginx: SIGHUP re-reads the certificate for new connections. Reading files is
        # blocking, so it runs off the loop; reload() logs its one line either way.
        loop.add_signal_handler(signal.SIGHUP, loop.run_in_executor, None, store.reload)
    if settings.discovery is not None:
        upstreams = f"{settings.discovery.label} (every {settings.resolver_valid:g}s)"
    else:
        upstreams = ", ".join(f"{u.name}={u.address}" for u in settings.upstreams)
    async with ProxyServer(settings, store=store) as proxy:
        listening = ", ".join(
            f"{listener.address.rpartition(':')[0]}:{port}{' ssl' if listener.ssl else ''}"
            for listener, port in zip(settings.listeners, proxy.ports, strict=True)
        )
        started = f"proxy listening on {listening}, upstreams {upstreams}, policy {settings.policy}"
        if settings.log_format == "json":
            logging.getLogger("proxy").info(started)
        else:
            print(started, file=sys.stderr, flush=True)
        await stop.wait()
        await proxy.close(grace=5.0)


def tune_malloc() -> None:
    """Keep 256 KB allocations on glibc's heap. uvloop's TLS transport decrypts every read
    into a fresh 256 KB buffer, which glibc otherwise maps and unmaps each time (mmap,
    mremap, munmap: three system calls and the page faults, per request). Elsewhere (no
    glibc) nothing is changed."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    mallopt(m_mmap_threshold, 4 << 20)
    mallopt(m_trim_threshold, 64 << 20)  # and do not give it back after every free


def main(argv: list[str] | None = None) -> int:
    try:
        settings = load_settings(argv)
        store = certificate_store(settings)
    except (SettingsError, TlsError) as error:
        print(f"proxy: {error}", file=sys.stderr)
        return 2
    # One line per event (upstreams discovered, drained, DNS problems) on stderr.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if settings.log_format == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
    if settings.access_log not in ("off", "stdout", "stderr"):
        try:  # the server opens it; say which file is wrong before anything listens
            open(settings.access_log, "a").close()
        except OSError as error:
            print(f"proxy: access_log {settings.access_log}: {error.strerror}", file=sys.stderr)
            return 2
    tune_malloc()
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(serve(settings, store))
    except OSError as error:
        listen = ",".join(str(listener) for listener in settings.listeners)
        print(f"proxy: cannot listen on {listen}: {error.strerror}", file=sys.stderr)
        return 1
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
