"""Session attribute transcoders (JSON by default, msgpack; never pickle) and record framing.

A stored record is one header line followed by the encoded attributes:
``SH1 <transcoder> <created> <written> <max_inactive_interval>\\n<attributes>``. The header
names its transcoder, so a reader decodes what any writer stored. The digest that decides
"unchanged, skip the backup" covers the attribute bytes only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, TypeAlias

import msgpack  # type: ignore[import-untyped]

from .errors import CorruptRecordError, UnstorableValueError

JsonValue: TypeAlias = "str | int | float | bool | list[JsonValue] | dict[str, JsonValue] | None"
Attributes: TypeAlias = "dict[str, JsonValue]"

MAX_NESTING = 64
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1
_MAGIC = b"SH1"


class Transcoder(Protocol):
    name: str

    def encode(self, attributes: Mapping[str, JsonValue]) -> bytes: ...

    def decode(self, data: bytes) -> Attributes: ...


_JSON_DECODER = json.JSONDecoder()


class JsonTranscoder:
    name = "json"

    def __init__(self) -> None:
        self._encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False,
                                         separators=(",", ":"))

    def encode(self, attributes: Mapping[str, JsonValue]) -> bytes:
        try:
            return self._encoder.encode(attributes).encode("utf-8")
        except (TypeError, ValueError, RecursionError) as exc:
            raise UnstorableValueError("<session>", f"not JSON-encodable: {exc}") from None

    def decode(self, data: bytes) -> Attributes:
        try:
            # Always UTF-8 (encode's): json.loads would detect the encoding of bytes first.
            value = _JSON_DECODER.decode(data.decode("utf-8"))
        except (ValueError, RecursionError) as exc:
            raise CorruptRecordError(f"bad JSON attributes: {exc}") from None
        return _check_attributes(value)


class MsgpackTranscoder:
    name = "msgpack"

    def encode(self, attributes: Mapping[str, JsonValue]) -> bytes:
        try:
            packed: bytes = msgpack.packb(attributes, use_bin_type=True)
            return packed
        except (TypeError, ValueError, OverflowError) as exc:
            raise UnstorableValueError("<session>", f"not msgpack-encodable: {exc}") from None

    def decode(self, data: bytes) -> Attributes:
        try:
            value = msgpack.unpackb(data, raw=False, strict_map_key=True)
        except (ValueError, msgpack.UnpackException) as exc:
            raise CorruptRecordError(f"bad msgpack attributes: {exc}") from None
        return _check_attributes(value)


TRANSCODERS: dict[str, Transcoder] = {"json": JsonTranscoder(), "msgpack": MsgpackTranscoder()}


def transcoder_named(name: str) -> Transcoder:
    return TRANSCODERS[name]


def check_storable(name: str, value: object) -> None:
    """Refuse, at set time, what both transcoders cannot store identically."""
    if type(name) is not str:
        raise UnstorableValueError(repr(name), "attribute names must be strings")
    _check_value(name, value, 0)


def _check_value(name: str, value: object, depth: int) -> None:
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return
    if kind is int:
        if not _INT_MIN <= value <= _INT_MAX:  # type: ignore[operator]
            raise UnstorableValueError(name, "integer outside the 64-bit range")
        return
    if kind is float:
        if not math.isfinite(value):  # type: ignore[arg-type]
            raise UnstorableValueError(name, "NaN and infinity cannot be stored")
        return
    if depth >= MAX_NESTING:
        raise UnstorableValueError(name, f"nested deeper than {MAX_NESTING} levels")
    if kind is list:
        for item in value:  # type: ignore[attr-defined]
            _check_value(name, item, depth + 1)
        return
    if kind is dict:
        for key, item in value.items():  # type: ignore[attr-defined]
            if type(key) is not str:
                raise UnstorableValueError(name, f"dict key {key!r} is not a string")
            _check_value(name, item, depth + 1)
        return
    raise UnstorableValueError(
        name, f"{kind.__name__} is not storable (use str, int, float, bool, None, list, dict)")


def _check_attributes(value: object) -> Attributes:
    if type(value) is not dict:
        raise CorruptRecordError("attributes are not a mapping")
    return value


@dataclass(slots=True)  # not frozen: one per load, and a frozen __init__ costs twice as much
class Record:
    transcoder: str
    created: float
    written: float
    max_inactive_interval: float
    attributes_bytes: bytes


def encode_record(transcoder: str, created: float, written: float,
                  max_inactive_interval: float, attributes_bytes: bytes) -> bytes:
    header = f"SH1 {transcoder} {created!r} {written!r} {max_inactive_interval!r}\n"
    return header.encode("ascii") + attributes_bytes


def decode_record(data: bytes) -> Record:
    header, newline, body = data.partition(b"\n")
    parts = header.split(b" ")
    if not newline or len(parts) != 5 or parts[0] != _MAGIC:
        raise CorruptRecordError("not a sessionstore record")
    name = parts[1].decode("ascii", "replace")
    if name not in TRANSCODERS:
        raise CorruptRecordError(f"unknown transcoder {name!r}")
    try:
        created, written, interval = float(parts[2]), float(parts[3]), float(parts[4])
    except ValueError:
        raise CorruptRecordError("bad record header") from None
    if not (math.isfinite(created) and math.isfinite(written) and math.isfinite(interval)):
        raise CorruptRecordError("bad record header")
    return Record(name, created, written, interval, body)


def digest(attributes_bytes: bytes) -> int:
    """Cheap in-process digest of encoded attributes (compared only within one process)."""
    return hash(attributes_bytes)
