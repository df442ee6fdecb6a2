"""Transcoders and set-time validation (item 9): pure."""

from __future__ import annotations

import math

import pytest

from sessionstore import UnstorableValueError
from sessionstore.codec import (
    CorruptRecordError,
    JsonValue,
    check_storable,
    decode_record,
    encode_record,
    transcoder_named,
)


def _nested(depth: int) -> list[object]:
    outer: list[object] = []
    inner = outer
    for _ in range(depth):
        deeper: list[object] = []
        inner.append(deeper)
        inner = deeper
    return outer


ATTRIBUTES: dict[str, JsonValue] = {"name": "välue", "n": 2**63, "f": 1.5, "ok": True, "none": None,
              "list": [1, "two", [3.0]], "dict": {"a": {"b": []}}}


@pytest.mark.parametrize("name", ["json", "msgpack"])
def test_round_trip_is_exact_and_stable(name: str) -> None:
    codec = transcoder_named(name)
    encoded = codec.encode(ATTRIBUTES)
    decoded = codec.decode(encoded)
    assert decoded == ATTRIBUTES
    assert list(decoded) == list(ATTRIBUTES)  # insertion order kept
    assert codec.encode(decoded) == encoded  # stable bytes: the digest sees "unchanged"


def test_records_name_their_transcoder() -> None:
    body = transcoder_named("msgpack").encode({"a": 1})
    record = decode_record(encode_record("msgpack", 10.5, 11.25, 1800.0, body))
    assert (record.transcoder, record.created, record.written) == ("msgpack", 10.5, 11.25)
    assert record.attributes_bytes == body
    for junk in (b"", b"hello", b"SH1 pickle 1 2 3\n...", b"SH1 json x 2 3\n{}"):
        with pytest.raises(CorruptRecordError):
            decode_record(junk)


@pytest.mark.parametrize("value", [
    object(), b"bytes", (1, 2), {1: "int key"}, {1.5}, math.nan, math.inf, 2**64,
    -(2**63) - 1, _nested(70),
])
def test_unstorable_values_are_refused_at_set_time(value: object) -> None:
    with pytest.raises(UnstorableValueError) as caught:
        check_storable("attr", value)
    assert "attr" in str(caught.value)


def test_never_pickle() -> None:
    with pytest.raises(KeyError):
        transcoder_named("pickle")
