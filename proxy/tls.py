"""TLS at the edge: server contexts from nginx-style settings, reloadable certificates, and
the few bytes of a ClientHello the listener reads before OpenSSL sees them.

Names follow nginx: `ssl_certificate` (PEM, the chain after the leaf), `ssl_certificate_key`,
`ssl_protocols`, `ssl_ciphers` (their defaults and parsers are in values.py, re-exported
here). ALPN offers `http/1.1` only. The accept loop that uses these is in tls_listener.py.
"""

from __future__ import annotations

import logging
import ssl
import warnings
from collections.abc import Iterable
from pathlib import Path

from proxy.errors import SettingsError, TlsError
from proxy.values import DEFAULT_CIPHERS as DEFAULT_CIPHERS
from proxy.values import DEFAULT_PROTOCOLS as DEFAULT_PROTOCOLS
from proxy.values import protocol_range as protocol_range

logger = logging.getLogger("proxy")

ALPN = "http/1.1"


def server_context(
    certificate: str,
    key: str,
    *,
    protocols: Iterable[str] = DEFAULT_PROTOCOLS,
    ciphers: str = DEFAULT_CIPHERS,
) -> ssl.SSLContext:
    """A server context for `certificate` (PEM; intermediates follow the leaf in the same
    file) and its private `key`. Raises TlsError naming the file and what is wrong with it,
    or SettingsError for `ssl_protocols` and `ssl_ciphers`."""
    lowest, highest = protocol_range(protocols)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # Python warns on TLS 1.0 and 1.1; here an operator asked for them by name.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = lowest
        context.maximum_version = highest
    try:
        context.set_ciphers(ciphers)
    except ssl.SSLError:
        raise SettingsError("ssl_ciphers", ciphers, "OpenSSL selects no cipher from it") from None
    # Client-initiated renegotiation costs the server a handshake per request: nginx refuses it.
    context.options |= ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols([ALPN])
    _load_pair(context, certificate, key)
    return context


def _load_pair(context: ssl.SSLContext, certificate: str, key: str) -> None:
    cert_text = _read("ssl_certificate", certificate)
    key_text = _read("ssl_certificate_key", key)
    if "-----BEGIN CERTIFICATE-----" not in cert_text:
        raise TlsError("ssl_certificate", certificate, "holds no PEM certificate")
    if "PRIVATE KEY-----" not in key_text:
        raise TlsError("ssl_certificate_key", key, "holds no PEM private key")
    if "ENCRYPTED" in key_text:
        raise TlsError("ssl_certificate_key", key, "the private key is encrypted; give it plain")
    try:
        # A password callback, so that OpenSSL never prompts on a terminal for one.
        context.load_cert_chain(certificate, key, password=lambda: _no_password(key))
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise TlsError(
                "ssl_certificate_key", key, f"does not match the certificate in {certificate}"
            ) from None
        # load_cert_chain does not say which file it choked on: parse the certificates alone.
        try:
            ssl.create_default_context(cadata=cert_text)
        except ssl.SSLError as cert_exc:
            raise TlsError(
                "ssl_certificate", certificate, f"cannot be parsed: {_reason(cert_exc)}"
            ) from None
        raise TlsError("ssl_certificate_key", key, f"cannot be loaded: {_reason(exc)}") from None


def _no_password(key: str) -> str:
    raise TlsError("ssl_certificate_key", key, "the private key wants a password")


def _read(setting: str, path: str) -> str:
    try:
        return Path(path).read_text("ascii", errors="replace")
    except FileNotFoundError:
        raise TlsError(setting, path, "no such file") from None
    except OSError as exc:
        raise TlsError(setting, path, f"cannot be read: {exc.strerror or exc}") from None


def _reason(exc: ssl.SSLError) -> str:
    return str(exc.reason or exc.strerror or exc).replace("_", " ").lower()


class CertificateStore:
    """The context new TLS connections get; `reload()` swaps it, as nginx does on SIGHUP.
    Open connections keep the context they were made with (each has its own SSLObject)."""

    def __init__(
        self,
        certificate: str,
        key: str,
        *,
        protocols: Iterable[str] = DEFAULT_PROTOCOLS,
        ciphers: str = DEFAULT_CIPHERS,
    ) -> None:
        self.certificate = certificate
        self.key = key
        self.protocols = tuple(protocols)
        self.ciphers = ciphers
        self._context = self._build()

    @property
    def context(self) -> ssl.SSLContext:
        return self._context

    def _build(self) -> ssl.SSLContext:
        return server_context(
            self.certificate, self.key, protocols=self.protocols, ciphers=self.ciphers
        )

    def reload(self) -> str | None:
        """Re-read the certificate and key. On failure the old context stays in use and the
        one line logged (logger "proxy") is also returned; None when the new pair is in use."""
        try:
            context = self._build()
        except (TlsError, SettingsError) as exc:
            line = f"TLS certificate reload failed, still serving the previous one: {exc}"
            logger.error(line)
            return line
        self._context = context
        logger.info("TLS certificate reloaded from %s", self.certificate)
        return None


def offered_alpn(record: bytes | bytearray | memoryview) -> list[bytes] | None:
    """The ALPN protocol names in a TLS record holding a ClientHello, or None when it has no
    ALPN extension or does not parse (OpenSSL then answers it). A ClientHello larger than its
    record (fragmented, over 16 KiB) reads as having no ALPN if the extension is cut off."""
    data = memoryview(record)
    try:
        if data[0] != 0x16 or data[5] != 0x01:
            return None
        end = min(len(data), 5 + (data[3] << 8 | data[4]))
        pos = 5 + 4 + 2 + 32  # record header, handshake header, legacy_version, random
        pos += 1 + data[pos]  # legacy_session_id
        pos += 2 + (data[pos] << 8 | data[pos + 1])  # cipher_suites
        pos += 1 + data[pos]  # legacy_compression_methods
        extensions_end = min(end, pos + 2 + (data[pos] << 8 | data[pos + 1]))
        pos += 2
        while pos + 4 <= extensions_end:
            kind = data[pos] << 8 | data[pos + 1]
            size = data[pos + 2] << 8 | data[pos + 3]
            pos += 4
            if kind == 16:  # application_layer_protocol_negotiation
                names = []
                at, stop = pos + 2, min(pos + size, extensions_end)
                while at < stop:
                    length = data[at]
                    names.append(bytes(data[at + 1 : at + 1 + length]))
                    at += 1 + length
                return names
            pos += size
    except IndexError:
        return None
    return None
