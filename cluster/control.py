"""The control channel: a unix socket served by the launcher, one JSON line each way.

Requests are {"command": "status"} or {"command": "kill"|"stop"|"start", "member": NAME};
replies are {"ok": true, "members": [...]} or {"ok": false, "error": "one line"}.
Members are restarted by the launcher itself, so they stay its children.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from pathlib import Path
from typing import Any

from .errors import ClusterError, ControlError
from .invocation import cli_command
from .status import MemberStatus
from .supervisor import Cluster

COMMANDS = ("status", "kill", "stop", "start")
REQUEST_READ_TIMEOUT = 5.0
MAX_REQUEST = 4096


async def _dispatch(cluster: Cluster, request: Any) -> dict[str, Any]:
    if not isinstance(request, dict) or request.get("command") not in COMMANDS:
        return {"ok": False, "error": f"unknown command (expected one of {', '.join(COMMANDS)})"}
    command = request["command"]
    if command != "status":
        name = request.get("member")
        if not isinstance(name, str):
            return {"ok": False, "error": f"{command} needs a member name"}
        try:
            await {"kill": cluster.kill, "stop": cluster.stop, "start": cluster.start}[command](
                name
            )
        except ClusterError as error:
            return {"ok": False, "error": str(error)}
    return {"ok": True, "members": [m.to_json() for m in cluster.statuses()]}


async def serve_control(cluster: Cluster, path: Path) -> asyncio.Server:
    """Listen on `path` (a stale socket left by a killed launcher is replaced)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                async with asyncio.timeout(REQUEST_READ_TIMEOUT):
                    line = await reader.readline()
                reply = await _dispatch(cluster, json.loads(line[:MAX_REQUEST]))
            except (TimeoutError, ValueError, OSError):
                reply = {"ok": False, "error": "malformed control request"}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except OSError:
            pass  # the client went away; nothing to tell it
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    path.unlink(missing_ok=True)  # noqa: ASYNC240 - one local unlink before serving
    return await asyncio.start_unix_server(handle, path=str(path), limit=MAX_REQUEST)


def request(path: Path, payload: dict[str, Any], *, timeout: float) -> list[MemberStatus]:
    """Send one command to the launcher and return the members it reports (blocking)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise ControlError(
                f"no cluster is running (no launcher at {path.parent}); "
                f"start one with: {cli_command()} up"
            ) from None
        except OSError as error:
            raise ControlError(f"cannot reach the launcher at {path}: {error}") from None
        try:
            sock.sendall(json.dumps(payload).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            raise ControlError(f"the launcher did not answer within {timeout:g}s") from None
        except OSError as error:
            raise ControlError(f"lost the launcher while waiting for its answer: {error}") from None
    try:
        reply = json.loads(data)
        if not reply["ok"]:
            raise ControlError(str(reply["error"]))
        return [MemberStatus.from_json(m) for m in reply["members"]]
    except (ValueError, KeyError, TypeError):
        raise ControlError("the launcher sent a reply this sessionha does not understand") from None


def launcher_running(path: Path) -> bool:
    """True when a launcher answers on `path` (a socket left by a killed one does not)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True
