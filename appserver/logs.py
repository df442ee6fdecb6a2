"""Logging for `python -m appserver`: one line per event, no tracebacks for client garbage.

aiohttp logs every unparsable request (bad request line, raw bytes in the URL, oversized
headers) with a full traceback at ERROR. That is the client's fault, already answered
with a 400, so it becomes one INFO line naming the client and the reason. The same
exception raised out of a request handler was answered 500 and keeps its traceback: the
line must say what the client got.

The access log (`access_log`, on by default as in nginx and Tomcat) is nginx's `combined`
format plus the request id and the request time in seconds, so the tools that read nginx's
logs read ours:

    192.0.2.7 - - [10/Jun/2024:13:55:36 +0000] "GET /test HTTP/1.1" 200 2326 "-" \\
        "curl/8.5.0" 4f1c0e3a9b2d4c6e8f0a1b2c3d4e5f60 0.002    (one line; split here)

The address is the client's as trusted_proxies decide (sessionstore's client_address: the
proxy's X-Real-IP / X-Forwarded-For from a trusted peer, else the peer). aiohttp calls the
access logger once per request anyway; it is the one place that sees every answer (also
the parser's own 400s and the 500 after a handler's exception) with its body size and time.
`log_format = "json"` makes every line, access and error, one JSON object.

An access line costs some 8 microseconds of CPU in isolation and 15 to 25 in a loaded server
(measured against `access_log = false`); `access_log = false` is the way to spare it.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import warnings
from datetime import UTC, datetime
from functools import lru_cache
from types import TracebackType
from typing import Any, TextIO

from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.multipart import BadContentDispositionHeader, BadContentDispositionParam
from aiohttp.web import BaseRequest, StreamResponse

from sessionstore.client_address import TrustedProxies, client_address

from .settings import LogFormat
from .traffic import REQUEST_ID, REQUEST_ID_KEY

ACCESS_LOGGER = "appserver.access"
TEXT_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"

# The web_protocol method that answers 500 to whatever a request handler raises.
_HANDLER_FRAME = "_handle_request"


class ClientErrorFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if (
            isinstance(exc, HttpProcessingError)
            and 400 <= exc.code < 500
            and not _raised_in_handler(exc.__traceback__)
        ):
            reason = (exc.message or type(exc).__name__).strip().splitlines()[0]
            record.msg = "bad request from %s: %s %s"
            client = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.args = (client, exc.code, reason)
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def _raised_in_handler(tb: TracebackType | None) -> bool:
    """Whether the exception came out of a request handler (its traceback starts where
    aiohttp caught it) rather than out of the HTTP parser, which answers its own 400."""
    return tb is not None and tb.tb_frame.f_code.co_name == _HANDLER_FRAME


def configure_logging(log_format: LogFormat = "text") -> None:
    """Every line on stderr: as TEXT_FORMAT, or as JSON objects. (Access lines do not go
    through here, see AccessLog.)"""
    errors = logging.StreamHandler(sys.stderr)
    errors.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=logging.INFO, handlers=[errors])
    logging.getLogger("aiohttp.server").addFilter(ClientErrorFilter())
    refuse_malformed_content_disposition()


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (ISO 8601, UTC), level, logger, message (and the
    traceback, if any, as one string), as AccessLog writes its lines too."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _iso_time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, ensure_ascii=False)


def access_logger_class(
    *, trusted: TrustedProxies, log_format: LogFormat, stream: TextIO | None = None
) -> type[AbstractAccessLogger]:
    """The access logger aiohttp's runner builds (it passes only a logger and a format)."""

    class BoundAccessLog(AccessLog):
        pass

    BoundAccessLog.trusted = trusted
    BoundAccessLog.json_lines = log_format == "json"
    BoundAccessLog.stream = stream
    return BoundAccessLog


class AccessLog(AbstractAccessLogger):
    """One line per request: nginx's combined format + request id + request time.

    With a `stream` each line is one write to it, as nginx writes an unbuffered access_log:
    Python's logging (a record, the caller's frame looked up, a lock, a flush) would be
    two thirds of a line's cost, some 14 of 21 microseconds. Without one, lines go to the
    logger aiohttp hands in (an app embedded elsewhere, with its own logging).
    """

    trusted = TrustedProxies(())
    json_lines = False
    stream: TextIO | None = None
    _second = -1
    _time_local = ""

    def log(self, request: BaseRequest, response: StreamResponse, seconds: float) -> None:
        try:
            line = self.json_line(request, response, seconds) if self.json_lines \
                else self.text_line(request, response, seconds)
            if self.stream is not None:
                self.stream.write(line + "\n")
            else:
                self.logger.info(line)
        except Exception:  # as aiohttp's own access logger: a bad line must not fail the answer
            self.logger.exception("cannot write the access log line")

    def _client(self, request: BaseRequest) -> str | None:
        headers = request.headers
        # A request aiohttp could not parse comes as a stand-in whose headers are a dict.
        getall = getattr(headers, "getall", None)
        forwarded = tuple(getall("X-Forwarded-For", ())) if getall is not None else ()
        return client_text(self.trusted, request.remote, headers.get("X-Real-IP"), forwarded)

    def text_line(self, request: BaseRequest, response: StreamResponse, seconds: float) -> str:
        headers = request.headers
        return (
            f'{self._client(request) or "-"} - - [{self._local_time()}] '
            f'"{_escape(_request_line(request))}" {response.status} '
            f'{body_bytes_sent(request, response)} "{_escape(headers.get("Referer", "-"))}" '
            f'"{_escape(headers.get("User-Agent", "-"))}" {_request_id(request, response)} '
            f"{seconds:.3f}"
        )

    def json_line(self, request: BaseRequest, response: StreamResponse, seconds: float) -> str:
        """nginx's variable names as keys; a header that was not sent is null."""
        headers = request.headers
        return json.dumps({
            "time": _iso_time(time.time()),
            "level": "info",
            "logger": self.logger.name,
            "remote_addr": self._client(request),
            "request": _request_line(request),
            "status": response.status,
            "body_bytes_sent": body_bytes_sent(request, response),
            "http_referer": headers.get("Referer"),
            "http_user_agent": headers.get("User-Agent"),
            "request_id": _request_id(request, response),
            "request_time": round(seconds, 3),
        }, ensure_ascii=False)

    @classmethod
    def _local_time(cls) -> str:
        """nginx's $time_local, formatted once a second."""
        now = time.time()
        if int(now) != cls._second:
            cls._second = int(now)
            cls._time_local = time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(now))
        return cls._time_local


@lru_cache(maxsize=4096)
def client_text(trusted: TrustedProxies, peer: str | None, real_ip: str | None,
                forwarded: tuple[str, ...]) -> str | None:
    """client_address as text, remembered: parsing the addresses (ipaddress) was half the
    cost of an access line, and the same few clients and proxies come back all the time."""
    address = client_address(peer, real_ip, forwarded, trusted)
    return None if address is None else str(address)


def _iso_time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")


def _request_line(request: BaseRequest) -> str:
    version = request.version
    return f"{request.method} {request.raw_path} HTTP/{version.major}.{version.minor}"


def _request_id(request: BaseRequest, response: StreamResponse) -> str:
    return response.headers.get(REQUEST_ID) or request.get(REQUEST_ID_KEY) or "-"


def body_bytes_sent(request: BaseRequest, response: StreamResponse) -> int:
    """nginx's $body_bytes_sent. aiohttp's `body_length` counts every byte written, the head
    too, so the head is taken off as aiohttp writes it (status line, a line per header, a
    blank line): right also for HEAD, a 304 and a peer that left mid-body."""
    head = len(f"HTTP/{request.version.major}.{request.version.minor} {response.status} "
               f"{response.reason}\r\n\r\n")
    head += sum(len(name) + len(value) + 4 for name, value in response.headers.items())
    return max(0, response.body_length - head)


def _escape(text: str) -> str:
    """As nginx writes a variable into a log line: quote, backslash, control and non-ASCII
    bytes as \\xHH, so one line stays one line and its quotes delimit its fields."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return text
    raw = text.encode("utf-8", "surrogateescape")
    return "".join(chr(b) if 0x20 <= b < 0x7F and b not in (0x22, 0x5C) else f"\\x{b:02X}"
                   for b in raw)


def refuse_malformed_content_disposition() -> None:
    """Make aiohttp's warnings about a part's malformed Content-Disposition errors.

    By default aiohttp prints the warning to stderr (the attacker's header, outside the log
    format) and guesses on with the part unnamed or a parameter dropped. As errors they end
    the read and the form is refused with a 400, as under pytest's filterwarnings = error.
    """
    for category in (BadContentDispositionHeader, BadContentDispositionParam):
        warnings.filterwarnings("error", category=category)
