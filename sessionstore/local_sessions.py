"""The sticky sessions one app server holds in memory, least recently used first, capped.

Keys are the random part of the id. The order is the order of use: the manager moves a
session to the end each time a request takes it (OrderedDict.move_to_end, O(1)). At the cap
(max_active_sessions) the least recently used session whose latest state memcached holds is
pushed out: dropped from memory only, it loads back from memcached on its next request as a
take-over would. A session that is busy or not saved yet is passed over (moved to the end);
when none of the oldest `SCAN` can go, there is no room and the caller decides.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from .ids import SessionId
from .session import Session
from .stats import Stats

SCAN = 64  # sessions looked at per push-out before giving up: bounds the cost of one create
# Ids rotated away, remembered (latest first out last) so that a request still carrying one
# cannot load the old copy from memcached before the rotating request has deleted it.
RETIRED_KEPT = 4096


class LocalSessions(OrderedDict[str, Session]):
    """Each session put here is told to report an id rotation, so that it moves to its new
    key at once: a request with the old id must not find it, one with the new id must."""

    def __setitem__(self, key: str, session: Session) -> None:
        session.on_rotate = self._rekey
        super().__setitem__(key, session)

    def _rekey(self, session: Session, old: SessionId) -> None:
        if self.get(old.random) is session:
            del self[old.random]
            self[session.sid.random] = session
            retired = self._retired
            retired[old.random] = None
            if len(retired) > RETIRED_KEPT:
                retired.popitem(last=False)

    def retired(self, key: str) -> bool:
        """Whether `key` (a random part) belonged to a session whose id was rotated here."""
        return key in self._retired

    def __init__(self, *, limit: int | None, can_push_out: Callable[[Session], bool],
                 stats: Stats) -> None:
        super().__init__()
        self._retired: OrderedDict[str, None] = OrderedDict()
        self.limit = limit
        self._can_push_out = can_push_out
        self._stats = stats

    def make_room(self) -> bool:
        """Push out least recently used sessions until one more fits; False when the oldest
        SCAN sessions all had to stay (busy, or changes memcached does not hold yet)."""
        limit = self.limit
        if limit is None:
            return True
        passed_over = 0
        while len(self) >= limit:
            if passed_over >= SCAN:
                return False
            key, session = next(iter(self.items()))
            if self._can_push_out(session):
                del self[key]
                self._stats.sessions_pushed_out += 1
            else:
                self.move_to_end(key)
                passed_over += 1
        return True
