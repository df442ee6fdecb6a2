"""Active health checks: `GET health_path` on a fresh connection, under a timeout."""

from __future__ import annotations

import asyncio

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
