"""Many users' sessions through the proxy, and a client loop that keeps reading and writing
them while the orchestrator changes things underneath; it counts what failed."""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field

from .browser import Browser, PageError


@dataclass
class Ledger:
    """What the loop saw: failed requests, and acknowledged writes missing on a later read."""

    gets: int = 0
    posts: int = 0
    failed_gets: list[str] = field(default_factory=list)
    failed_posts: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    servers: set[str] = field(default_factory=set)


@dataclass
class User:
    """One browser and the entries the server acknowledged to it."""

    browser: Browser
    acknowledged: dict[str, str] = field(default_factory=dict)

    def write(self, name: str, value: str) -> None:
        """POST one entry; it counts as acknowledged only when the answer shows it stored."""
        page = self.browser.post(name, value)
        if page.attributes.get(name) != value:
            raise PageError(f"POST {name} answered without it: {page}")
        self.acknowledged[name] = value

    def check(self, ledger: Ledger) -> None:
        """One GET; records it as failed, or records every acknowledged entry it lacks."""
        ledger.gets += 1
        try:
            page = self.browser.get()
        except PageError as exc:
            ledger.failed_gets.append(str(exc))
            return
        ledger.servers.add(page.server)
        missing = {k: v for k, v in self.acknowledged.items() if page.attributes.get(k) != v}
        if missing:
            ledger.lost.append(f"{self.browser.session_id}: {sorted(missing)} on {page.server}")


def register_users(port: int, count: int, entries: int) -> list[User]:
    users = [User(Browser(port)) for _ in range(count)]
    for number, user in enumerate(users):
        for entry in range(entries):
            user.write(f"user{number}-entry{entry}", f"value {entry}")
    return users


def check_all(users: list[User]) -> Ledger:
    ledger = Ledger()
    for user in users:
        user.check(ledger)
    return ledger


class ClientLoop:
    """A thread that GETs every user in turn and POSTs a new entry every `write_every` GETs.

    Bounded: it stops by itself after `max_seconds`, and `stop()` ends it sooner.
    """

    def __init__(self, users: list[User], *, write_every: int = 3, max_seconds: float = 300.0):
        self.users = users
        self.write_every = write_every
        self.max_seconds = max_seconds
        self.ledger = Ledger()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="client-loop", daemon=True)

    def __enter__(self) -> ClientLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> Ledger:
        self._stop.set()
        self._thread.join(timeout=60)
        assert not self._thread.is_alive(), "the client loop did not stop"
        return self.ledger

    def passes(self) -> int:
        """Full rounds over every user so far."""
        return self.ledger.gets // len(self.users)

    def wait_passes(self, count: int, *, within: float) -> None:
        target = self.passes() + count
        deadline = time.monotonic() + within
        while self.passes() < target:
            assert time.monotonic() < deadline, f"the client loop made no {count} passes"
            time.sleep(0.1)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        for step in itertools.count():
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            user = self.users[step % len(self.users)]
            user.check(self.ledger)
            if step % self.write_every == 0:
                self.ledger.posts += 1
                name = f"loop{step}"
                try:
                    user.write(name, f"written at step {step}")
                except PageError as exc:
                    self.ledger.failed_posts.append(f"{name}: {exc}")
