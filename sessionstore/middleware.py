"""aiohttp integration: `setup`, the session middleware, `get_session`, `encode_url`.

HTTP status codes of sessionstore are decided here and only here, each with a one-line text:
- 413 for a session over max_session_size;
- 429 with Retry-After (seconds until the client has a token again) when a new session's
  first write is over its client's session_create_rate: nothing is stored, and a session
  made in this request is dropped (no cookie);
- 503 with Retry-After when a non-sticky lock wait exceeds lock_timeout, when
  max_active_sessions are in memory and none can be pushed out (no new session), and when,
  with session_backup_async = false, the request's change is not confirmed in memcached
  within session_backup_timeout (durable acknowledgement: a 2xx means the change is in
  memcached; see manager.py for the one exception, every node dead in sticky mode).

The session cookie's attributes come from the settings (cookies.py); an invalidated session
is answered with the cookie deleted (Max-Age=0). A session older than max_session_lifetime
is invalidated when a request opens it, and that request gets a fresh one.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware

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
from .tracking import is_https, requested_id, requesting_client, with_session_id

MANAGER_KEY: web.AppKey[SessionManager] = web.AppKey("sessionstore_manager", SessionManager)

_RETRY_AFTER_SECONDS = "1"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _RequestSession:
    """Per-request state, set by the middleware; the session is opened by the first
    `get_session` of the request (a request that never asks for it costs no lookup).

    It holds no reference to the request: the request holds it, and a cycle between the two
    would leave every request to the garbage collector instead of freeing it at its end."""

    __slots__ = ("cookie_sent", "ended", "lock", "manager", "requested_id", "session")

    def __init__(self, manager: SessionManager) -> None:
        self.manager = manager
        self.session: Session | None = None
        self.requested_id: str | None = None
        self.cookie_sent = False
        self.lock: HeldLock | None = None
        self.ended: list[Session] = []


_STATE_KEY: web.RequestKey[_RequestSession] = web.RequestKey("sessionstore_state",
                                                            _RequestSession)


def setup(app: web.Application, settings: SessionStoreSettings, *,
          manager: SessionManager | None = None, middleware: bool = True) -> SessionManager:
    """Install the session middleware and lifecycle on `app`; returns the manager (built from
    `settings` unless a ready one is injected, e.g. with a test clock).

    With `middleware=False` the caller runs `session_middleware(manager)` itself, from inside
    a middleware of its own: one aiohttp middleware layer costs about a twentieth of a small
    request, so an app with one of its own saves that much by not adding a second."""
    if manager is None:
        manager = build_manager(settings)
    app[MANAGER_KEY] = manager
    if middleware:
        app.middlewares.append(session_middleware(manager))

    async def lifecycle(_: web.Application) -> AsyncIterator[None]:
        await manager.start()
        yield
        await manager.close()

    app.cleanup_ctx.append(lifecycle)
    return manager


async def get_session(request: web.Request) -> Session:
    """The request's session: loaded or created on the first call, then the same object."""
    try:
        state = request[_STATE_KEY]
    except KeyError:
        raise SessionStoreError("sessionstore is not set up on this app (sessionstore.setup)"
                                ) from None
    session = state.session
    if session is not None:
        if not session.invalidated:
            return session
        # Invalidated earlier in this request: start anew (if there is room for a new one;
        # if not, the invalidated one still ends with the request).
        fresh = state.manager.create()
        state.ended.append(session)
        state.session = fresh
        fresh.active_requests += 1
        return fresh
    manager = state.manager
    requested, state.cookie_sent = requested_id(request, manager.settings)
    # A sticky session held here needs no coroutine: most requests end at `held`.
    held = manager.held(requested) if requested and manager.sticky else None
    if held is not None:
        session = held
    else:
        path_qs = request.path_qs if manager.locks_by_uri else ""
        session, state.lock = await manager.open(requested, method=request.method,
                                                 path_qs=path_qs)
    session.active_requests += 1  # until plan_save (or abandon) at the end of the request
    state.requested_id = requested
    state.session = session
    lifetime = manager.settings.max_session_lifetime
    if lifetime and session.outlived(lifetime, manager.clock()):  # no clock read without one
        session.invalidate()  # ends with the request, as invalidated sessions do
        return await get_session(request)  # a fresh one
    return session


async def new_session(request: web.Request) -> Session:
    """The request's session under a new id, its data kept: `Session.rotate_id()` for those
    used to aiohttp-session's `new_session` (which starts empty: `session.clear()`)."""
    session = await get_session(request)
    session.rotate_id()
    return session


def encode_url(request: web.Request, url: str) -> str:
    """`url` with `;jsessionid=ID` (the cookie name in lower case) when the request carried
    no session cookie and has a session; otherwise, and always with tracking_modes =
    "cookie", `url` unchanged. A query string or fragment stays after the id."""
    try:
        state = request[_STATE_KEY]
    except KeyError:
        return url
    session = state.session
    if session is None or state.cookie_sent or session.invalidated:
        return url
    settings = state.manager.settings
    if not settings.url_tracking:
        return url
    return with_session_id(url, settings.session_url_parameter, session.id)


def session_middleware(manager: SessionManager) -> Middleware:
    cookies = SessionCookies(manager.settings)
    plan_save = manager.planner.plan  # manager.plan_save without its extra call

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        state = request[_STATE_KEY] = _RequestSession(manager)
        raised: web.HTTPException | None = None
        try:
            response: web.StreamResponse = await handler(request)
        except web.HTTPException as exc:
            response = raised = exc
        except LockTimeoutError as exc:
            return web.Response(status=503, text=f"{exc}; retry shortly\n",
                                headers={"Retry-After": _RETRY_AFTER_SECONDS})
        except TooManySessionsError as exc:
            # Whatever this request had opened before (an invalidated session) still ends.
            response = web.Response(status=503, text=f"{exc}; retry shortly\n",
                                    headers={"Retry-After": _RETRY_AFTER_SECONDS})
        except BaseException:
            for ended in state.ended:
                ended.active_requests -= 1
            if state.session is not None:
                await manager.abandon(state.session, state.lock)
            raise
        session = state.session
        path = request.path.partition(";")[0]  # without ;jsessionid=... for the ignore pattern
        if session is None:
            if manager.is_ignored(path):  # static files: counted, as MSM does, never loaded
                manager.stats.requests_ignored += 1
            if raised is not None:
                raise raised
            return response
        if state.ended:
            for ended in state.ended:
                await manager.finish(ended, None, plan_save(ended, path))
        dropped = False  # not stored at all (rate limit): no cookie either way
        try:
            work = plan_save(session, path,
                             client=requesting_client(request, manager.trusted_proxies))
        except SessionTooLargeError as exc:
            work = None
            if not response.prepared:  # a streamed response is already on its way
                raised = None
                response = web.Response(status=413, text=f"{exc}\n")
        except SessionRateLimitError as exc:
            work = None
            dropped = True
            if not response.prepared:
                raised = None
                response = web.Response(status=429, text=f"{exc}\n", headers={
                    "Retry-After": str(max(1, math.ceil(exc.retry_after)))})
        if work is not None or state.lock is not None:
            durable = await manager.finish(session, state.lock, work)
            if not durable and not response.prepared:
                raised = None
                timeout = manager.settings.session_backup_timeout
                response = web.Response(
                    status=503, headers={"Retry-After": _RETRY_AFTER_SECONDS},
                    text=f"the session change was not confirmed in memcached within "
                         f"{timeout:g}s (session_backup_timeout); retry shortly\n")
        if not dropped and not response.prepared:
            if session.invalidated:
                response.headers.add(hdrs.SET_COOKIE, cookies.delete(
                    https=is_https(request, manager.trusted_proxies)))
            elif session.new or session.sid.text != state.requested_id:
                response.headers.add(hdrs.SET_COOKIE, cookies.issue(
                    session.id, https=is_https(request, manager.trusted_proxies)))
        session.new = False  # the client has been told about it
        if raised is not None:
            raise raised
        return response

    return middleware

