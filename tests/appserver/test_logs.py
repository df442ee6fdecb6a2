"""Client garbage is one log line, not a traceback."""

from __future__ import annotations

import logging
import sys

from aiohttp.http_exceptions import BadHttpMessage

from appserver.logs import ClientErrorFilter


def record_for(exc: BaseException) -> logging.LogRecord:
    try:
        raise exc
    except BaseException:
        exc_info = sys.exc_info()
    return logging.LogRecord(
        "aiohttp.server",
        logging.ERROR,
        __file__,
        1,
        "Error handling request from %s",
        ("10.0.0.9",),
        exc_info,
    )


def test_a_client_error_becomes_one_info_line() -> None:
    record = record_for(BadHttpMessage("Invalid char in url query:\n\n  b'GET /?\\xff'"))
    assert ClientErrorFilter().filter(record)
    assert record.levelno == logging.INFO and record.exc_info is None
    assert record.getMessage() == "bad request from 10.0.0.9: 400 Invalid char in url query:"


def test_a_server_error_keeps_its_traceback() -> None:
    record = record_for(RuntimeError("bug"))
    assert ClientErrorFilter().filter(record)
    assert record.levelno == logging.ERROR and record.exc_info is not None
