"""Logging for `python -m appserver`: one line per event, no tracebacks for client garbage.

aiohttp logs every unparsable request (bad request line, raw bytes in the URL, oversized
headers) with a full traceback at ERROR. That is the client's fault, already answered
with a 400, so it becomes one INFO line naming the client and the reason.
"""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import HttpProcessingError


class ClientErrorFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and 400 <= exc.code < 500:
            reason = (exc.message or type(exc).__name__).strip().splitlines()[0]
            record.msg = "bad request from %s: %s %s"
            client = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.args = (client, exc.code, reason)
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("aiohttp.server").addFilter(ClientErrorFilter())
