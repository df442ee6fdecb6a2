"""Every head pattern of the proxy costs time proportional to the bytes it reads.

A pattern that backtracks turns one request into seconds of CPU on the event loop,
during which no other client is answered. Measured as growth: the cost of a head 8
times larger must grow about 8 times (quadratic would be 64, exponential never ends),
for adversarial heads (a bad byte at the very end, long runs of what two adjacent parts
of a pattern both accept) as for valid ones of the same size.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator

import pytest

from proxy import response_head, wire

SMALL, LARGE = 4096, wire.MAX_HEADER_BYTES
# Linear growth is 8x; this leaves room for cache effects and a loaded machine, not for
# n^2 (64x) or worse.
GROWTH_LIMIT = 32
# Below this a measurement is noise: a pattern that fails at once costs nothing.
FLOOR = 20e-6


def _heads(size: int) -> Iterator[tuple[str, bytes]]:
    start = b"GET / HTTP/1.1\r\nHost: a\r\n"
    line = b"X-Header-Name: value value\r\n"
    lines = line * (size // len(line))
    spaces = b" " * size
    yield "valid", start + lines + b"\r\n"
    yield "bad name at the end", start + lines + b"Bad,Name: x\r\n\r\n"
    yield "bad byte at the end", start + lines + b"X: \x00\r\n\r\n"
    yield "unfinished (split read)", start + lines
    yield "spaces in a value", start + b"X: a" + spaces + b"b\r\n\r\n"
    yield "spaces then a bad byte", start + b"X: a" + spaces + b"\x00\r\n\r\n"
    yield "white space lines", start + b"X: \t \t\r\n" * (size // 9) + b"\x01"
    yield "colons", start + b"X:" + b": " * (size // 2) + b"\x00\r\n\r\n"
    yield "empty lines", start + b"\r\n" * (size // 2) + b"\x00"
    yield "hosts and keep-alives", (
        b"GET / HTTP/1.1\r\n" + b"Host: a\r\nConnection: keep-alive\r\n" * (size // 34) + b"\x00"
    )
    yield "cookie lines", start + b"\r\ncookie: " * (size // 10) + b"\r\n\r\n"
    yield "trailing spaces", start + b"X-A: b \r\n" * (size // 9) + b"\r\n"
    status = b"HTTP/1.1 200 OK\r\n"
    yield "response lines", status + b"X-A: b\r\nContent-Length: 1\r\n" * (size // 30) + b"\x00"
    yield "response connections", status + b"Connection: keep-alive\r\n" * (size // 24) + b"\x00"
    yield "response spaces", status + b"Connection:" + spaces + b"x\r\n\r\n"


def _scan(pattern: re.Pattern[bytes], how: str) -> Callable[[bytes], object]:
    return getattr(pattern, how)  # type: ignore[no-any-return]


PATTERNS: dict[str, Callable[[bytes], object]] = {
    "LEAN_REQUEST": _scan(wire.LEAN_REQUEST, "fullmatch"),
    "SIMPLE_REQUEST": _scan(wire.SIMPLE_REQUEST, "fullmatch"),
    "HEADER_FIELD": _scan(wire.HEADER_FIELD, "findall"),
    "BODY_OR_UPGRADE": _scan(wire.BODY_OR_UPGRADE, "search"),
    "OTHER_PROTOCOL": _scan(wire.OTHER_PROTOCOL, "search"),
    "COOKIE_VALUES": _scan(wire.COOKIE_VALUES, "findall"),
    "LEAN_RESPONSE": _scan(wire.LEAN_RESPONSE, "match"),
    "response rewrite": lambda head: response_head.prepare_response(
        head, 200, head_only=False, client_http11=True, client_keep_alive=True
    ),
}


def _costs(scan: Callable[[bytes], object], *inputs: bytes) -> list[float]:
    """The least time of 9 runs for each input, the inputs taking turns so that a busy
    moment of the machine weighs on all of them alike."""
    best = [float("inf")] * len(inputs)
    for _ in range(9):
        for index, data in enumerate(inputs):
            started = time.perf_counter()
            scan(data)
            best[index] = min(best[index], time.perf_counter() - started)
    return [max(cost, FLOOR) for cost in best]


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_cost_grows_linearly_with_the_head(name: str) -> None:
    scan = PATTERNS[name]
    small = dict(_heads(SMALL))
    large = dict(_heads(LARGE))
    growth, relative = {}, {}
    for kind in small:
        small_cost, large_cost, valid = _costs(scan, small[kind], large[kind], large["valid"])
        growth[kind] = large_cost / small_cost
        # And no adversarial head costs much more than a valid one of the same size.
        relative[kind] = large_cost / valid
    assert max(growth.values()) < GROWTH_LIMIT, growth
    assert max(relative.values()) < GROWTH_LIMIT, relative
