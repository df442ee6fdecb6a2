"""One DNS name, resolved again and again (nginx's `resolver ... valid=`), each time
under a timeout; a problem (no answer, no such name, no address, a failing resolver)
is reported once per change, not once per round, and so is the recovery."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Sequence

from netnames.addresses import usable_addresses

Resolver = Callable[[str], Awaitable[Sequence[str]]]
"""name -> the IP addresses it resolves to right now (raises OSError when it does not)."""

RESOLVE_TIMEOUT = 5.0  # seconds one resolution may take (nginx's resolver_timeout is 30 s)


async def getaddrinfo_resolver(name: str) -> list[str]:
    """Every distinct IPv4 and IPv6 address of `name`, in the resolver's order."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        name, None, family=socket.AF_UNSPEC, type=socket.SOCK_STREAM
    )
    return usable_addresses(str(sockaddr[0]) for *_, sockaddr in infos)


class NameWatch:
    """Resolves `name` when asked; tells `on_problem` and `on_recovered` only of changes."""

    def __init__(
        self,
        name: str,
        *,
        resolver: Resolver = getaddrinfo_resolver,
        timeout: float = RESOLVE_TIMEOUT,
        on_problem: Callable[[str], None],
        on_recovered: Callable[[list[str]], None],
    ) -> None:
        self.name = name
        self.resolver = resolver
        self.timeout = timeout
        self.on_problem = on_problem
        self.on_recovered = on_recovered
        # The problem reported last; None while the name resolves.
        self.problem: str | None = None
        self.resolutions = 0
        self.failures = 0

    async def resolve(self) -> list[str] | None:
        """The name's usable addresses now, or None (the problem reported if it is new)."""
        self.resolutions += 1
        name = self.name
        try:
            async with asyncio.timeout(self.timeout):
                answers = await self.resolver(name)
        except TimeoutError:
            self._failed(f"no answer from the resolver within {self.timeout:g}s")
            return None
        except OSError as error:  # socket.gaierror: NXDOMAIN, no data, resolver down
            self._failed(f"does not resolve ({error.strerror or error})")
            return None
        except Exception as error:  # a resolver's bug must not end the watch
            self._failed(f"resolver failed ({type(error).__name__}: {error})")
            return None
        addresses = usable_addresses(answers)
        if not addresses:
            self._failed("resolves to no address")
            return None
        if self.problem is not None:
            self.problem = None
            self.on_recovered(addresses)
        return addresses

    def _failed(self, what: str) -> None:
        self.failures += 1
        problem = f"{self.name!r} {what}"
        if problem != self.problem:
            self.problem = problem
            self.on_problem(problem)
