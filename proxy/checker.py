"""Active health checks: `GET health_path` on a fresh connection, under a timeout.

Static upstreams pass on any 2xx or 3xx status line; a discovered upstream must
answer 200 and its body tells the proxy which route it carries.
"""

from __future__ import annotations

import asyncio

from netnames import address_text
from proxy.membership import health_answer_complete, parse_health_answer
from proxy.settings import UpstreamSpec


async def check_upstream(spec: UpstreamSpec, path: str, within: float) -> tuple[bool, str]:
    """(True, "") when the upstream answers 2xx or 3xx in time, else (False, why)."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(within):
            reader, writer = await asyncio.open_connection(spec.host, spec.port)
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {spec.address}\r\n"
                "User-Agent: sessionha-proxy-health\r\nConnection: close\r\n\r\n".encode()
            )
            line = await reader.readline()
    except TimeoutError:
        return False, "timed out"
    except ConnectionRefusedError:
        return False, "connection refused"
    except OSError as error:
        return False, error.strerror or type(error).__name__
    finally:
        if writer is not None:
            writer.close()
    parts = line.split()
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return False, "no HTTP answer" if not line else "malformed answer"
    status = int(parts[1])
    if 200 <= status < 400:
        return True, ""
    return False, f"status {status}"


# The largest health answer read when the route is wanted from its body.
MAX_HEALTH_BYTES = 64 * 1024


async def probe_upstream(
    host: str, port: int, path: str, within: float
) -> tuple[bool, str, str | None]:
    """Health check of a discovered upstream: (passed, why not, route it reports).

    Passing means status 200; the route is the `"route"` field of a JSON body
    (appserver's /health), else an `X-Route` response header, else None.
    """
    address = address_text(host, port)
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(within):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {address}\r\nAccept: application/json\r\n"
                "User-Agent: sessionha-proxy-health\r\nConnection: close\r\n\r\n".encode()
            )
            raw = await reader.read(MAX_HEALTH_BYTES)
            while len(raw) < MAX_HEALTH_BYTES and not health_answer_complete(raw):
                more = await reader.read(MAX_HEALTH_BYTES - len(raw))
                if not more:
                    break
                raw += more
    except TimeoutError:
        return False, "timed out", None
    except ConnectionRefusedError:
        return False, "connection refused", None
    except OSError as error:
        return False, error.strerror or type(error).__name__, None
    finally:
        if writer is not None:
            writer.close()
    answer = parse_health_answer(raw)
    if answer.status is None:
        return False, "no HTTP answer" if not raw else "malformed answer", None
    if answer.status != 200:
        return False, f"status {answer.status}", None
    return True, "", answer.route
