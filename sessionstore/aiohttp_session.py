"""sessionstore behind aiohttp-session's API (the optional extra `sessionha[aiohttp-session]`).

    storage = MemcachedHAStorage(SessionStoreSettings.from_mapping({...}))
    aiohttp_session.setup(app, storage)
    app.cleanup_ctx.append(storage.cleanup_ctx)  # optional: a clean close at shutdown

An app written against `aiohttp_session.get_session` / `new_session` / `session.invalidate()`
(and aiohttp-security's `SessionIdentityPolicy`, which calls them) then gets sticky or
non-sticky sessions with crosswise backup and failover. The ids and memcached records are
the native middleware's, so the proxy routes them the same way, and one cluster can mix
apps written either way. Without `cleanup_ctx` the storage starts on the first request and
its connections close with the process.

What does not carry over from aiohttp-session:
- values must fit the chosen transcoder (str, int, float, bool, None, lists and dicts of
  them; never arbitrary objects): anything else raises UnstorableValueError when it is set;
  `encoder` / `decoder` / `key_factory` do not exist.
- the cookie is configured by the settings (session_cookie_name, session_cookie_path, ...),
  and how long a session lives by max_inactive_interval (idle) and max_session_lifetime;
  a `session.max_age` set by the app is kept but changes nothing.
- `new_session()` returns an empty session with a new id, as aiohttp-session's does; the
  session the request had loaded before it ends (its copies are deleted), which is the
  defence against session fixation. `session.identity` is the session id, also for a new
  session; `set_new_identity` is refused (ids have sessionstore's format).
- `session.created` is the creation time (aiohttp-session moves it on every change).
- `changed()` forces nothing: every session a request opened is finished at its end (the
  stored digest decides whether a write is needed). As with aiohttp-session, a handler that
  raises or streams its answer stores no change (here it is also rolled back in memory);
  it should open its session in the request's own task, whose end finishes the request.
- sessionstore's answers come through as responses: 503 (lock wait, no room for a new
  session, backup not confirmed), 413 (session too large), 429 (new sessions too fast).
- aiohttp-session keeps its objects under plain `str` request keys, so aiohttp >= 3.14
  warns with NotAppKeyWarning (aiohttp itself ignores it by default).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp_session
from aiohttp import hdrs, web

from .assembly import build_manager
from .cookies import SessionCookies
from .errors import (
    LockTimeoutError,
    SessionRateLimitError,
    SessionStoreError,
    SessionTooLargeError,
    TooManySessionsError,
)
from .locking import HeldLock
from .manager import SessionManager
from .session import Session
from .settings import SessionStoreSettings
from .tracking import is_https, requested_id, requesting_client

_RETRY_AFTER_SECONDS = "1"


@dataclass(eq=False)
class _Opened:
    """A sessionstore session a request opened, and what its end must do."""

    native: Session
    lock: HeldLock | None = None
    done: bool = False


@dataclass(eq=False)
class _RequestState:
    requested_id: str | None
    cookie_sent: bool
    opened: list[_Opened] = field(default_factory=list)

    def track(self, native: Session, lock: HeldLock | None = None) -> None:
        """`native` is counted as in use by this request until its end."""
        native.active_requests += 1
        self.opened.append(_Opened(native, lock))

    def tracked(self, native: Session) -> bool:
        return any(entry.native is native for entry in self.opened)


_STATE_KEY: web.RequestKey[_RequestState] = web.RequestKey("sessionstore_aiohttp_session",
                                                           _RequestState)


class HASession(aiohttp_session.Session):
    """An aiohttp-session `Session` whose data and metadata are a sessionstore session."""

    def __init__(self, native: Session, *, storage: MemcachedHAStorage,
                 state: _RequestState | None) -> None:
        # aiohttp_session.Session.__init__ is not called: it would keep a dict of its own.
        # Always "changed", so that aiohttp-session's middleware calls save_session for
        # every answer and the request's session work (locks, backup, cookie) is finished.
        self._changed = True
        self._max_age = storage.max_age
        self._native = native
        self._storage = storage
        self._state = state  # None: made by new_session, bound to its request when saved
        self.used: list[Session] = [native]  # every sessionstore session behind this one

    @property
    def native(self) -> Session:
        """The sessionstore session now behind this one (a fresh one after invalidate)."""
        if self._native.invalidated:
            self.renew()
        return self._native

    def renew(self) -> None:
        """Go on with a new session, as aiohttp-session goes on with an emptied one after
        invalidate(): here it has a new id, and the invalidated one is deleted."""
        self._native = self._storage.create(self._state)
        self.used.append(self._native)

    @property
    def new(self) -> bool:
        return self._native.new

    @property
    def identity(self) -> str:
        return self._native.id

    @property
    def created(self) -> int:
        return int(self._native.created)

    @property
    def empty(self) -> bool:
        return self._native.invalidated or not self._native

    @property
    def max_age(self) -> int | None:
        return self._max_age

    @max_age.setter
    def max_age(self, value: int | None) -> None:
        self._max_age = value  # kept for the app to read; the settings decide (see above)

    def changed(self) -> None:
        """Nothing to force: every opened session is finished and its digest compared."""

    def invalidate(self) -> None:
        self._native.invalidate()

    def set_new_identity(self, identity: object) -> None:
        raise SessionStoreError("session ids are sessionstore's own format: no identity "
                                "can be set (new_session() gives a new id)")

    # Reads see an invalidated session as empty (it is); only a change starts a new one, so
    # that a handler reading after invalidate() still answers with the cookie deleted.

    def __getitem__(self, key: str) -> Any:
        return self._native[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.native[key] = value

    def __delitem__(self, key: str) -> None:
        del self._native[key]  # an invalidated session has nothing to delete

    def __iter__(self) -> Iterator[str]:
        return iter(self._native)

    def __len__(self) -> int:
        return len(self._native)

    def __contains__(self, key: object) -> bool:
        return key in self._native

    def __repr__(self) -> str:
        native = self._native
        return f"<HASession {native.id} new={native.new} attributes={len(native)}>"


class MemcachedHAStorage(aiohttp_session.AbstractStorage):
    """An `aiohttp_session.AbstractStorage` backed by a sessionstore `SessionManager` (built
    from `settings` unless a ready one is injected, e.g. with a test clock)."""

    def __init__(self, settings: SessionStoreSettings, *,
                 manager: SessionManager | None = None) -> None:
        max_age = settings.session_cookie_max_age
        super().__init__(
            cookie_name=settings.session_cookie_name,
            domain=settings.session_cookie_domain or None,
            max_age=math.ceil(max_age) if max_age > 0 else None,
            path=settings.session_cookie_path,
            secure={"always": True, "never": False}.get(settings.session_cookie_secure),
            httponly=settings.session_cookie_http_only,
            samesite=settings.session_cookie_same_site,
        )
        self.settings = settings
        self.manager = manager if manager is not None else build_manager(settings)
        self._cookies = SessionCookies(settings)
        self._started: asyncio.Future[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the manager once (node probes, sweeper); the first request does it too."""
        if self._started is None:
            self._started = asyncio.ensure_future(self.manager.start())
        await asyncio.shield(self._started)  # a cancelled first request leaves it starting

    async def close(self) -> None:
        """Finish background work (bounded by the manager's flush) and close the manager."""
        while self._background:
            await asyncio.wait(set(self._background))
        await self.manager.close()

    async def cleanup_ctx(self, _: web.Application) -> AsyncIterator[None]:
        """For `app.cleanup_ctx.append(storage.cleanup_ctx)`: started with the app, closed
        with it."""
        await self.start()
        yield
        await self.close()

    # -- aiohttp-session's storage API ------------------------------------------------------

    async def load_session(self, request: web.Request) -> HASession:
        await self.start()
        state = self._state_of(request)
        path_qs = request.path_qs if self.manager.locks_by_uri else ""
        try:
            native, lock = await self.manager.open(state.requested_id, method=request.method,
                                                   path_qs=path_qs)
        except (LockTimeoutError, TooManySessionsError) as exc:
            raise _unavailable(exc) from None
        state.track(native, lock)
        session = HASession(native, storage=self, state=state)
        lifetime = self.settings.max_session_lifetime
        if lifetime and native.outlived(lifetime, self.manager.clock()):
            native.invalidate()  # deleted at the end of the request
            session.renew()
        return session

    async def new_session(self) -> HASession:
        await self.start()
        return HASession(self.create(None), storage=self, state=None)

    async def save_session(self, request: web.Request, response: web.StreamResponse,
                           session: aiohttp_session.Session) -> None:
        if not isinstance(session, HASession):
            raise SessionStoreError(f"{session!r} did not come from MemcachedHAStorage")
        state = self._state_of(request)
        current = session.used[-1]  # invalidated or not: not renewed just to be saved
        for native in session.used:
            if not state.tracked(native):
                state.track(native)  # made by new_session or after invalidate
        path = request.path.partition(";")[0]
        for entry in state.opened:
            if entry.done or entry.native is current:
                continue
            if not entry.native.invalidated:
                entry.native.invalidate()  # replaced by new_session: the old id must go
            entry.done = True
            await self.manager.finish(entry.native, entry.lock,
                                      self.manager.plan_save(entry.native, path))
        entry = next(e for e in state.opened if e.native is current)
        if entry.done:
            return
        entry.done = True
        dropped = False
        try:
            work = self.manager.plan_save(
                current, path, client=requesting_client(request, self.manager.trusted_proxies))
        except SessionTooLargeError as exc:
            work = None
            _refuse(response, 413, str(exc))
        except SessionRateLimitError as exc:
            work, dropped = None, True
            _refuse(response, 429, str(exc), retry_after=max(1, math.ceil(exc.retry_after)))
        if work is not None or entry.lock is not None:
            durable = await self.manager.finish(current, entry.lock, work)
            if not durable:
                _refuse(response, 503, "the session change was not confirmed in memcached "
                        f"within {self.settings.session_backup_timeout:g}s "
                        "(session_backup_timeout); retry shortly", retry_after=1)
        if not dropped and not response.prepared:
            https = is_https(request, self.manager.trusted_proxies)
            if current.invalidated:
                response.headers.add(hdrs.SET_COOKIE, self._cookies.delete(https=https))
            elif current.new or current.id != state.requested_id:
                response.headers.add(hdrs.SET_COOKIE, self._cookies.issue(current.id,
                                                                          https=https))
        current.new = False

    # -- the request's sessions ----------------------------------------------------------

    def create(self, state: _RequestState | None) -> Session:
        """A new sessionstore session (counted as in use once bound to a request)."""
        try:
            native = self.manager.create()
        except TooManySessionsError as exc:
            raise _unavailable(exc) from None
        if state is not None:
            state.track(native)
        return native

    def _state_of(self, request: web.Request) -> _RequestState:
        state = request.get(_STATE_KEY)
        if state is None:
            requested, from_cookie = requested_id(request, self.settings)
            state = request[_STATE_KEY] = _RequestState(requested, from_cookie)
            task = asyncio.current_task()
            if task is not None:
                task.add_done_callback(lambda done: self._request_ended(done, state))
        return state

    def _request_ended(self, task: asyncio.Future[Any], state: _RequestState) -> None:
        """After the request's task: sessions save_session did not finish (the handler
        raised, or streamed its answer: aiohttp-session's middleware saves neither) are
        finished as aiohttp-session would leave them, their changes not stored (and rolled
        back in memory), their locks released; an invalidated one is deleted all the same."""
        manager = self.manager
        for entry in state.opened:
            if entry.done:
                continue
            entry.done = True
            native = entry.native
            work: Coroutine[Any, Any, object]
            if native.invalidated:
                work = manager.finish(native, entry.lock, manager.plan_save(native, ""))
            else:
                # Rolled back only to a state known here (a record in another transcoder's
                # format is not kept decoded: rolling back would empty it, then store that).
                if native.may_have_changed() and (
                        native.stored_attributes is not None or not native.persisted):
                    native.roll_back()
                work = manager.abandon(native, entry.lock)
            background = asyncio.ensure_future(work)
            self._background.add(background)
            background.add_done_callback(self._background.discard)


def _unavailable(exc: SessionStoreError) -> web.HTTPServiceUnavailable:
    return web.HTTPServiceUnavailable(text=f"{exc}; retry shortly\n",
                                      headers={"Retry-After": _RETRY_AFTER_SECONDS})


def _refuse(response: web.StreamResponse, status: int, text: str, *,
            retry_after: int | None = None) -> None:
    """Turn the app's answer into sessionstore's refusal (aiohttp-session's middleware
    returns the response object it has, so it is changed in place)."""
    if response.prepared:
        return
    response.set_status(status)
    if isinstance(response, web.Response):
        response.content_type = "text/plain"
        response.text = f"{text}\n"
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
