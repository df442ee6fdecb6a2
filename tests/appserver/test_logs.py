"""Client garbage is one log line, not a traceback."""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.test_utils import TestClient

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


async def test_a_client_error_raised_by_a_handler_is_logged_as_the_500_it_got(
    aiohttp_client: Callable[..., Awaitable[TestClient[web.Request, web.Application]]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """aiohttp answers 500 to whatever a handler raises, a 400-coded HttpProcessingError
    included: its log line must not call that a bad request."""

    async def handler(request: web.Request) -> web.Response:
        raise BadHttpMessage("Too many headers received")

    app = web.Application()
    app.router.add_get("/", handler)
    client = await aiohttp_client(app)
    server_log = logging.getLogger("aiohttp.server")
    log_filter = ClientErrorFilter()
    server_log.addFilter(log_filter)
    try:
        with caplog.at_level(logging.INFO, logger="aiohttp.server"):
            response = await client.get("/")
    finally:
        server_log.removeFilter(log_filter)
    assert response.status == 500
    [record] = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert record.levelno == logging.ERROR and record.exc_info is not None
    assert "bad request" not in record.getMessage()
