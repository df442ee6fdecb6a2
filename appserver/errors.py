"""The app server's error family; each request error carries the HTTP status it answers."""

from __future__ import annotations

import logging


class AppServerError(Exception):
    """Base of every error the app server raises on purpose."""


class ConfigError(AppServerError):
    """A bad or missing setting; str() is one line naming the key and the bad value."""

    def __init__(self, key: str, value: object, reason: str) -> None:
        self.key = key
        self.value = value
        self.reason = reason
        super().__init__(f"{key}: {reason}" if value is None else f"{key}: {value!r} {reason}")


class RequestError(AppServerError):
    """A request we refuse; answered with `status` and str() as a plain-text body, and
    logged as one line (`log_label` from CLIENT: STATUS message) at `log_level`."""

    status = 400
    log_label = "bad request"
    log_level = logging.INFO
    # True when the connection cannot carry another request after this one.
    close_connection = False


class BadFormError(RequestError):
    """The query string or form body cannot be decoded (invalid text in its charset, broken
    percent-escapes, malformed multipart: boundaries, part headers, truncation)."""

    status = 400


class BodyUnreadableError(BadFormError):
    """The HTTP parser failed the body on its way in (broken chunk framing, a content coding
    that does not decode): nothing more of it can be read, and where the next request on
    the connection would start is lost with it."""

    close_connection = True


class InputTooLargeError(RequestError):
    """A field, a body or the number of fields or attributes exceeds its limit."""

    status = 413


class UnsupportedMediaTypeError(RequestError):
    """The body is in a form we do not read: a media type other than the two form types, or
    a charset, transfer encoding or content coding we do not know."""

    status = 415


class ClientGoneError(RequestError):
    """The peer closed or reset the connection before its request body arrived whole.

    Nobody is left to read an answer; 499 is what nginx logs for it ("client closed
    request"), so the access log and the metrics tell it apart from a server error. Not a
    fault of this server, hence a debug line only.
    """

    status = 499
    log_label = "abandoned request"
    log_level = logging.DEBUG
