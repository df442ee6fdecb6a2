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

from .session import Session
from .stats import Stats

SCAN = 64  # sessions looked at per push-out before giving up: bounds the cost of one create


class LocalSessions(OrderedDict[str, Session]):
    def __init__(self, *, limit: int | None, can_push_out: Callable[[Session], bool],
                 stats: Stats) -> None:
        super().__init__()
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
