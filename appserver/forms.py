"""Request parameters as test.jsp sees them, decoded strictly (pure: no aiohttp here).

`request.getParameter(name)` in a servlet answers the first value found, query string
first, then an urlencoded body. Invalid UTF-8 is refused rather than replaced, so nothing
is ever stored on behalf of garbage.
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from .errors import BadFormError, InputTooLargeError

# More fields than this in one query string or body is abuse, not a form.
MAX_FIELDS = 1000

Fields = Sequence[tuple[str, str]]


def parse_urlencoded(raw: bytes | str, *, where: str) -> list[tuple[str, str]]:
    """'a=1&b=%C3%A9' -> [('a', '1'), ('b', 'é')]; BadFormError on invalid UTF-8."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        return parse_qsl(
            text,
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FIELDS,
        )
    except UnicodeError:
        raise BadFormError(f"{where} is not valid UTF-8") from None
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
