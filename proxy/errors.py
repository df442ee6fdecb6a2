"""The proxy's one error family."""

from __future__ import annotations


class ProxyError(Exception):
    """Base class of every error the proxy raises on purpose."""


class SettingsError(ProxyError):
    """A configuration key has a value the proxy cannot use."""

    def __init__(self, key: str, value: object, why: str) -> None:
        self.key = key
        self.value = value
        self.why = why
        super().__init__(f"bad proxy setting {key}={value!r}: {why}")


class BadRequestError(ProxyError):
    """A client request that must be answered with a 4xx and never forwarded."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(f"{status} {reason}")


class TlsError(ProxyError):
    """A certificate or key file the proxy cannot serve TLS with."""

    def __init__(self, key: str, path: str, why: str) -> None:
        self.key = key
        self.path = path
        self.why = why
        super().__init__(f"{key} {path}: {why}")
