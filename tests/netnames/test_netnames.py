"""netnames: address text, a resolver's usable answers, and one name watched over time."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence

from netnames import NameWatch, address_text, getaddrinfo_resolver, usable_addresses


def test_addresses_are_deduplicated_and_validated_in_resolver_order() -> None:
    answers = ["10.0.0.2", "10.0.0.1", "10.0.0.2", "::ffff:10.0.0.1", "fe80::1%eth0", "junk"]
    assert usable_addresses(answers) == ["10.0.0.2", "10.0.0.1", "fe80::1"]
    assert address_text("10.0.0.1", 8000) == "10.0.0.1:8000"
    assert address_text("fd00::5", 8000) == "[fd00::5]:8000"


class Zone:
    """A resolver whose answer the test sets: addresses, an error, or no answer at all."""

    def __init__(self) -> None:
        self.addresses: list[str] = []
        self.error: BaseException | None = None
        self.hang = False

    async def resolve(self, name: str) -> Sequence[str]:
        if self.hang:
            await asyncio.sleep(3600)
        if self.error is not None:
            raise self.error
        return self.addresses


async def test_a_problem_and_the_recovery_are_reported_once_per_change() -> None:
    zone = Zone()
    problems: list[str] = []
    recoveries: list[list[str]] = []
    watch = NameWatch(
        "app.test",
        resolver=zone.resolve,
        timeout=0.2,
        on_problem=problems.append,
        on_recovered=recoveries.append,
    )
    zone.addresses = ["10.0.0.1", "junk"]
    assert await watch.resolve() == ["10.0.0.1"]
    assert (problems, recoveries) == ([], [])  # resolving from the start is no recovery
    zone.error = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    for _ in range(3):
        assert await watch.resolve() is None
    assert problems == ["'app.test' does not resolve (Name or service not known)"]
    zone.error = None
    zone.addresses = []
    assert await watch.resolve() is None
    zone.error = RuntimeError("resolver bug")
    assert await watch.resolve() is None
    zone.error, zone.hang = None, True
    assert await watch.resolve() is None  # bounded by the timeout
    assert problems[1:] == [
        "'app.test' resolves to no address",
        "'app.test' resolver failed (RuntimeError: resolver bug)",
        "'app.test' no answer from the resolver within 0.2s",
    ]
    zone.hang, zone.addresses = False, ["10.0.0.2"]
    assert await watch.resolve() == ["10.0.0.2"]
    assert await watch.resolve() == ["10.0.0.2"]
    assert recoveries == [["10.0.0.2"]]
    assert watch.problem is None
    assert (watch.resolutions, watch.failures) == (9, 6)


async def test_the_system_resolver_answers_for_localhost_and_fails_for_an_invalid_name() -> None:
    assert "127.0.0.1" in await getaddrinfo_resolver("localhost") or "::1" in (
        await getaddrinfo_resolver("localhost")
    )
    problems: list[str] = []
    watch = NameWatch(
        "sessionha-nowhere.invalid", on_problem=problems.append, on_recovered=problems.extend
    )
    assert await watch.resolve() is None
    assert problems and problems[0].startswith("'sessionha-nowhere.invalid' does not resolve (")
