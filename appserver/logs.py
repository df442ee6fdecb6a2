"""Logging for `python -m appserver`: one line per event, no tracebacks for client garbage.

aiohttp logs every unparsable request (bad request line, raw bytes in the URL, oversized
headers) with a full traceback at ERROR. That is the client's fault, already answered
with a 400, so it becomes one INFO line naming the client and the reason. The same
exception raised out of a request handler was answered 500 and keeps its traceback: the
line must say what the client got.
"""

from __future__ import annotations

import logging
import warnings
from types import TracebackType

from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.multipart import BadContentDispositionHeader, BadContentDispositionParam

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


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("aiohttp.server").addFilter(ClientErrorFilter())
    refuse_malformed_content_disposition()


def refuse_malformed_content_disposition() -> None:
    """Make aiohttp's warnings about a part's malformed Content-Disposition errors.

    By default aiohttp prints the warning to stderr (the attacker's header, outside the log
    format) and guesses on with the part unnamed or a parameter dropped. As errors they end
    the read and the form is refused with a 400, as under pytest's filterwarnings = error.
    """
    for category in (BadContentDispositionHeader, BadContentDispositionParam):
        warnings.filterwarnings("error", category=category)
