"""Parameters as test.jsp reads them, decoded strictly; no sockets here."""

from __future__ import annotations

import pytest

from appserver.errors import BadFormError, InputTooLargeError
from appserver.forms import DataEntry, apply_entry, data_entry, first_value, parse_urlencoded


def test_urlencoded_is_decoded_as_utf8_with_plus_as_space() -> None:
    assert parse_urlencoded(b"dataName=caf%C3%A9&dataValue=a+b&empty=", where="form body") == [
        ("dataName", "café"),
        ("dataValue", "a b"),
        ("empty", ""),
    ]


@pytest.mark.parametrize("raw", [b"dataName=%FF", b"dataName=\xff\xfe", b"dataName=%C3"])
def test_invalid_utf8_is_refused_not_replaced(raw: bytes) -> None:
    with pytest.raises(BadFormError, match="form body is not valid UTF-8"):
        parse_urlencoded(raw, where="form body")


def test_thousands_of_fields_are_refused() -> None:
    raw = "&".join(f"k{i}=v" for i in range(5000))
    with pytest.raises(InputTooLargeError, match="more than 1000 fields"):
        parse_urlencoded(raw, where="query string")


def test_get_parameter_takes_the_query_string_first() -> None:
    query = [("dataName", "from-query")]
    body = [("dataName", "from-body"), ("dataValue", "v")]
    assert first_value("dataName", query, body) == "from-query"
    assert first_value("dataValue", query, body) == "v"
    assert first_value("other", query, body) is None


def test_missing_or_empty_data_name_stores_nothing() -> None:
    assert data_entry([("dataValue", "x")], max_name_length=10) is None
    assert data_entry([("dataName", ""), ("dataValue", "x")], max_name_length=10) is None


def test_an_over_long_name_is_refused() -> None:
    with pytest.raises(InputTooLargeError, match="dataName is too long: 11 characters, limit 10"):
        data_entry([("dataName", "x" * 11)], max_name_length=10)


def test_entries_are_set_replaced_and_removed_like_set_attribute() -> None:
    attributes: dict[str, object] = {}
    apply_entry(attributes, DataEntry("a", "1"), max_attributes=2)
    apply_entry(attributes, DataEntry("b", "2"), max_attributes=2)
    apply_entry(attributes, DataEntry("a", "3"), max_attributes=2)  # replacing needs no room
    assert list(attributes.items()) == [("a", "3"), ("b", "2")]
    apply_entry(attributes, DataEntry("a", None), max_attributes=2)  # null value removes
    assert attributes == {"b": "2"}


def test_a_new_name_past_the_attribute_limit_is_refused_and_data_kept() -> None:
    attributes: dict[str, object] = {"a": "1", "b": "2"}
    with pytest.raises(InputTooLargeError, match="too many session attributes: the limit is 2"):
        apply_entry(attributes, DataEntry("c", "3"), max_attributes=2)
    assert attributes == {"a": "1", "b": "2"}
