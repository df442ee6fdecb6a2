"""The app server's error family; each request error carries the HTTP status it answers."""

from __future__ import annotations


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
    """Bad client input; answered with `status` and str() as a plain-text body."""

    status = 400


class BadFormError(RequestError):
    """The query string or form body cannot be decoded (invalid UTF-8, bad encoding)."""

    status = 400


class InputTooLargeError(RequestError):
    """A field, a body or the number of fields or attributes exceeds its limit."""

    status = 413
