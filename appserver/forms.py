"""Request parameters as test.jsp sees them, decoded strictly (pure: no aiohttp here).

`request.getParameter(name)` in a servlet answers the first value found, query string
first, then an urlencoded body. Text that does not decode in its charset, a charset or
transfer encoding we do not know and a broken percent-escape are refused rather than
guessed around, so nothing is ever stored on behalf of garbage.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from .errors import BadFormError, InputTooLargeError, UnsupportedMediaTypeError

# More fields than this in one query string or body is abuse, not a form.
MAX_FIELDS = 1000
# A user name on the demo's sign-in form: a name, not a document.
MAX_USERNAME_LENGTH = 256

Fields = Sequence[tuple[str, str]]

# A charset name as RFC 2978 spells them (plus '.' and ':' of aliases like
# ISO_8859-1:1987). Checked before codecs.lookup, which raises ValueError or
# UnicodeEncodeError instead of LookupError on NULs and lone surrogates.
_CHARSET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$%&'+^_`{}~.:-]{0,39}")
# Python text codecs that are transforms, not charsets: punycode decodes in quadratic time
# (a 1 MB body would hold the event loop for minutes), the escapes turn text into code.
_NOT_CHARSETS = frozenset(
    {"charmap", "idna", "punycode", "raw-unicode-escape", "undefined", "unicode-escape"}
)
# What aiohttp's part reader decodes (RFC 2045 section 6.1); anything else it would raise on.
_TRANSFER_ENCODINGS = frozenset({"7bit", "8bit", "binary", "base64", "quoted-printable"})
# A '%' not followed by two hex digits: parse_qsl would keep it as text.
_BROKEN_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def quoted(text: str, limit: int = 80) -> str:
    """repr() of untrusted text, cut to `limit` characters: one printable line whatever it
    holds (control characters, lone surrogates from undecodable header bytes)."""
    return repr(text[:limit] + "..." if len(text) > limit else text)


def text_charset(name: str, *, where: str) -> str:
    """The codec name for a charset a client declared; UnsupportedMediaTypeError if it is
    none we know as a charset."""
    if _CHARSET_NAME.fullmatch(name):
        try:
            info = codecs.lookup(name)
        except LookupError:
            pass
        else:
            # bytes.decode refuses the non-text codecs (rot13, zlib, ...) anyway; say so here.
            if getattr(info, "_is_text_encoding", True) and info.name not in _NOT_CHARSETS:
                return info.name
    raise UnsupportedMediaTypeError(f"unknown charset {quoted(name)} in {where}")


def decode_text(raw: bytes, charset: str, *, where: str) -> str:
    """raw in `charset` (a name text_charset gave); BadFormError if it does not decode."""
    try:
        return raw.decode(charset)
    except UnicodeError:
        raise BadFormError(f"{where} is not valid {charset.upper()}") from None


def check_transfer_encoding(value: str | None, *, where: str) -> None:
    """A part's Content-Transfer-Encoding must be one we decode (or absent)."""
    if value is not None and value.strip().lower() not in _TRANSFER_ENCODINGS:
        raise UnsupportedMediaTypeError(
            f"unsupported Content-Transfer-Encoding {quoted(value)} in {where}"
        )


def parse_urlencoded(
    raw: bytes | str, *, where: str, charset: str = "utf-8"
) -> list[tuple[str, str]]:
    """'a=1&b=%C3%A9' -> [('a', '1'), ('b', 'é')]; BadFormError on text or percent-escapes
    that are not valid in `charset` (a name text_charset gave) and on broken escapes."""
    try:
        text = raw.decode(charset) if isinstance(raw, bytes) else raw
        if "%" not in text and "+" not in text:
            # Nothing to unquote (a short ASCII form): parse_qsl's result, at a third of
            # its cost.
            if text.count("&") >= MAX_FIELDS:
                raise InputTooLargeError(f"{where} has more than {MAX_FIELDS} fields")
            return [(name, value) for name, _, value in
                    (part.partition("=") for part in text.split("&") if part)]
        if _BROKEN_ESCAPE.search(text):
            raise BadFormError(f"{where} has a '%' that is not followed by two hex digits")
        return parse_qsl(
            text,
            keep_blank_values=True,
            encoding=charset,
            errors="strict",
            max_num_fields=MAX_FIELDS,
        )
    except UnicodeError:
        raise BadFormError(f"{where} is not valid {charset.upper()}") from None
    except ValueError:
        raise InputTooLargeError(f"{where} has more than {MAX_FIELDS} fields") from None


def first_value(name: str, *sources: Fields) -> str | None:
    """The servlet's getParameter: first value of `name` over the sources in order."""
    for fields in sources:
        for key, value in fields:
            if key == name:
                return value
    return None


@dataclass(frozen=True, slots=True)
class DataEntry:
    """What test.jsp does with dataName/dataValue: set it, or remove it (null value)."""

    name: str
    value: str | None


def data_entry(*sources: Fields, max_name_length: int) -> DataEntry | None:
    """The entry the request asks to store; None when dataName is missing or empty."""
    name = first_value("dataName", *sources)
    if not name:
        return None
    if len(name) > max_name_length:
        raise InputTooLargeError(
            f"dataName is too long: {len(name)} characters, limit {max_name_length}"
        )
    return DataEntry(name, first_value("dataValue", *sources))


def username_entry(*sources: Fields) -> DataEntry:
    """The `user` attribute the sign-in form asks to store: its `username` field, required."""
    name = first_value("username", *sources)
    if name is None or not name.strip():
        raise BadFormError("username is required (a non-empty form field)")
    if len(name) > MAX_USERNAME_LENGTH:
        raise InputTooLargeError(
            f"username is too long: {len(name)} characters, limit {MAX_USERNAME_LENGTH}"
        )
    return DataEntry("user", name)


def apply_entry(
    attributes: MutableMapping[str, Any], entry: DataEntry, *, max_attributes: int
) -> None:
    """setAttribute(name, value); a null value removes, as the servlet API does.

    A new name is refused once the session holds `max_attributes`; what it holds stays.
    """
    if entry.value is None:
        attributes.pop(entry.name, None)
        return
    if entry.name not in attributes and len(attributes) >= max_attributes:
        raise InputTooLargeError(
            f"too many session attributes: the limit is {max_attributes};"
            f" {entry.name[:64]!r} was not stored"
        )
    attributes[entry.name] = entry.value
