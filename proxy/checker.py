"""Active health checks: `GET health_path` on a fresh connection, under a timeout.

Static upstreams pass on any 2xx or 3xx status line; a discovered upstream must
answer 200 and its body tells the proxy which route it carries. Either way a JSON
body (appserver's /health) is kept as the upstream's report for the cluster view.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from netnames import address_text
from proxy.membership import health_answer_complete, parse_health_answer
from proxy.settings import UpstreamSpec

# The largest health answer read.
MAX_HEALTH_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Check:
    """One health check's outcome."""

    passed: bool
    reason: str  # why it did not pass ("" when it did)
    route: str | None = None  # the route the answer reports
    report: dict[str, Any] | None = None  # the answer's JSON object


async def check_health(host: str, port: int, path: str, within: float, *, exact: bool) -> Check:
    """GET `path`; passes on 200 when `exact`, else on any 2xx or 3xx."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(within):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {address_text(host, port)}\r\n"
                "Accept: application/json\r\nUser-Agent: sessionha-proxy-health\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            raw = await reader.read(MAX_HEALTH_BYTES)
            while len(raw) < MAX_HEALTH_BYTES and not health_answer_complete(raw):
                more = await reader.read(MAX_HEALTH_BYTES - len(raw))
                if not more:
                    break
                raw += more
    except TimeoutError:
        return Check(False, "timed out")
    except ConnectionRefusedError:
        return Check(False, "connection refused")
    except OSError as error:
        return Check(False, error.strerror or type(error).__name__)
    finally:
        if writer is not None:
            writer.close()
    answer = parse_health_answer(raw)
    status = answer.status
    if status is None:
        return Check(False, "no HTTP answer" if not raw else "malformed answer")
    if status != 200 if exact else not 200 <= status < 400:
        return Check(False, f"status {status}")
    return Check(True, "", answer.route, answer.report)


async def check_upstream(spec: UpstreamSpec, path: str, within: float) -> tuple[bool, str]:
    """(True, "") when a static upstream answers 2xx or 3xx in time, else (False, why)."""
    check = await check_health(spec.host, spec.port, path, within, exact=False)
    return check.passed, check.reason
