"""Request ids and the access log.

Every request gets an id (nginx's `$request_id`): a per-process random prefix and a
counter, unique without a system call per request. The access log writes nginx's
`combined` format plus the request id and the upstream's response time (nginx's
`$request_id $upstream_response_time`; the app servers' lines end in `$request_id
$request_time`, so the id is the same field in both), or one JSON object per line with
`log_format = json`. Lines are buffered and written a few times a second (nginx's
`access_log ... buffer=`), never per request.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from typing import IO, Literal

from proxy.errors import SettingsError

LogFormat = Literal["text", "json"]

_HEADER = re.compile(rb"\r\n(?i:(referer|user-agent)):[ \t]*([^\r\n]*?)[ \t]*(?=\r\n)")


def parse_access_log(key: str, value: object) -> str:
    """`off` (nginx's `access_log off`), `stdout`, `stderr`, or a file to append to."""
    text = str(value).strip()
    if not text or "\0" in text:
        raise SettingsError(key, value, "expected off, stdout, stderr or a file name")
    return text


def parse_log_format(key: str, value: object) -> LogFormat:
    text = str(value).strip().lower()
    if text == "text":
        return "text"
    if text == "json":
        return "json"
    raise SettingsError(key, value, "expected text or json")


def open_access_log(where: str, log_format: LogFormat) -> AccessLog | None:
    """The access log `access_log` names, or None for `off`. Raises OSError for a file
    that cannot be opened."""
    if where == "off":
        return None
    if where in ("stdout", "stderr"):
        stream: IO[str] = sys.stdout if where == "stdout" else sys.stderr
    else:
        stream = open(where, "a", encoding="utf-8")  # noqa: SIM115 (the log owns it)
    return AccessLog(stream, json_lines=log_format == "json")


ID_LINE = len(b"\r\nX-Request-ID: ")


class RequestIds:
    """Ids unique across processes and restarts: 16 random hex digits and a counter.
    Each comes as the header line that carries it, `\r\nX-Request-ID: <id>` (ID_LINE
    long before the id), made a batch at a time: formatting one per request costs more
    than the rest of a lean request's bookkeeping."""

    __slots__ = ("_next", "_prefix", "_ready")

    _BATCH = 512

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex().encode()
        self._next = 0
        self._ready: list[bytes] = []

    def new(self) -> bytes:
        ready = self._ready
        if not ready:
            start = self._next
            self._next = start + self._BATCH
            prefix = self._prefix
            ready += [
                b"\r\nX-Request-ID: %s%08x" % (prefix, n) for n in range(self._next, start, -1)
            ]
        return ready.pop()


def _quoted(value: bytes) -> str:
    # As nginx escapes variables in log lines: `"` and `\` and non-printables as \xHH.
    out = []
    for byte in value:
        if byte in (0x22, 0x5C) or not 0x20 <= byte < 0x7F:
            out.append(f"\\x{byte:02X}")
        else:
            out.append(chr(byte))
    return "".join(out)


class AccessLog:
    """Buffered access log lines for one stream (a file, stdout or stderr)."""

    def __init__(self, stream: IO[str], *, json_lines: bool = False) -> None:
        self.stream = stream
        self.json_lines = json_lines
        self._lines: list[str] = []
        self._second = -1
        self._time_local = ""

    def _now(self) -> tuple[float, str]:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._time_local = time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(now))
        return now, self._time_local

    def request(
        self,
        *,
        client: bytes,
        head: bytes,
        status: int,
        body_bytes: int,
        request_id: bytes,
        upstream_seconds: float | None,
    ) -> None:
        """One answered request; `head` is the client's request head as it came."""
        line_end = head.find(b"\r\n")
        request_line = head[: line_end if line_end >= 0 else len(head)]
        found = {name.lower(): value for name, value in _HEADER.findall(head)}
        now, local = self._now()
        urt = "-" if upstream_seconds is None else f"{upstream_seconds:.3f}"
        if self.json_lines:
            record = {
                "time": now,
                "remote_addr": client.decode("latin-1"),
                "request": request_line.decode("latin-1"),
                "status": status,
                "body_bytes_sent": body_bytes,
                "http_referer": found.get(b"referer", b"").decode("latin-1"),
                "http_user_agent": found.get(b"user-agent", b"").decode("latin-1"),
                "request_id": request_id.decode("latin-1"),
                "upstream_response_time": upstream_seconds,
            }
            self._lines.append(json.dumps(record, separators=(",", ":")))
            return
        referer = _quoted(found.get(b"referer", b"-"))
        agent = _quoted(found.get(b"user-agent", b"-"))
        self._lines.append(
            f'{client.decode("latin-1")} - - [{local}] "{_quoted(request_line)}" {status} '
            f'{body_bytes} "{referer}" "{agent}" {request_id.decode("latin-1")} {urt}'
        )

    def close(self) -> None:
        self.flush()
        if self.stream not in (sys.stdout, sys.stderr):
            self.stream.close()

    def flush(self) -> None:
        if self._lines:
            lines, self._lines = self._lines, []
            try:
                self.stream.write("\n".join(lines) + "\n")
                self.stream.flush()
            except (OSError, ValueError):  # a closed or full log must not stop the proxy
                pass


class JsonFormatter(logging.Formatter):
    """`log_format = json`: every log record as one JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, object] = {
            "time": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, separators=(",", ":"))
