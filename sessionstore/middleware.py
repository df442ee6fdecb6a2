"""aiohttp integration: `setup`, the session middleware, `get_session`, `encode_url`.

HTTP status codes of sessionstore are decided here and only here: 413 for a session over
max_session_size, 503 (with Retry-After) when a non-sticky lock wait exceeds lock_timeout.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware

from .errors import LockTimeoutError, SessionStoreError, SessionTooLargeError
from .locking import HeldLock
from .manager import SessionManager
from .session import Session
from .settings import SessionStoreSettings

MANAGER_KEY: web.AppKey[SessionManager] = web.AppKey("sessionstore_manager", SessionManager)

_JSESSIONID_PARAM = ";jsessionid="
_RETRY_AFTER_SECONDS = "1"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(slots=True)
class _RequestSession:
    """Per-request state, created by the first `get_session` of the request."""

    manager: SessionManager
    session: Session
    requested_id: str | None
    cookie_sent: bool
    lock: HeldLock | None
    ended: list[Session] = field(default_factory=list)


_STATE_KEY: web.RequestKey[_RequestSession] = web.RequestKey("sessionstore_state",
                                                            _RequestSession)


def setup(app: web.Application, settings: SessionStoreSettings, *,
          manager: SessionManager | None = None) -> SessionManager:
    """Install the session middleware and lifecycle on `app`; returns the manager (built from
    `settings` unless a ready one is injected, e.g. with a test clock)."""
    if manager is None:
        manager = SessionManager(settings=settings)
    app[MANAGER_KEY] = manager
    app.middlewares.append(session_middleware(manager))

    async def lifecycle(_: web.Application) -> AsyncIterator[None]:
        await manager.start()
        yield
        await manager.close()

    app.cleanup_ctx.append(lifecycle)
    return manager


async def get_session(request: web.Request) -> Session:
    """The request's session: loaded or created on the first call, then the same object."""
    state = _state_of(request)
    if state is not None:
        if not state.session.invalidated:
            return state.session
        state.ended.append(state.session)  # invalidated earlier in this request: start anew
        state.session = session = state.manager.create()
        session.active_requests += 1
        return session
    manager = request.app.get(MANAGER_KEY) or request.config_dict.get(MANAGER_KEY)
    if manager is None:
        raise SessionStoreError("sessionstore is not set up on this app (sessionstore.setup)")
    requested = _cookie_value(request.headers.get(hdrs.COOKIE),
                              manager.settings.session_cookie_name)
    cookie_sent = requested is not None
    if requested is None:
        requested = _id_from_path(request.path)
    path_qs = request.path_qs if manager.locks_by_uri else ""
    session, lock = await manager.open(requested, method=request.method, path_qs=path_qs)
    session.active_requests += 1  # until plan_save (or abandon) at the end of the request
    request[_STATE_KEY] = _RequestSession(manager, session, requested, cookie_sent, lock)
    return session


def encode_url(request: web.Request, url: str) -> str:
    """`url` with `;jsessionid=ID` when the request carried no session cookie and has a
    session; otherwise `url` unchanged. A query string or fragment stays after the id."""
    state = _state_of(request)
    if state is None or state.cookie_sent or state.session.invalidated:
        return url
    cut = min((i for i in (url.find("?"), url.find("#")) if i >= 0), default=len(url))
    base = url[:cut]
    if _JSESSIONID_PARAM in base:
        base = base[:base.index(_JSESSIONID_PARAM)]
    return f"{base}{_JSESSIONID_PARAM}{state.session.id}{url[cut:]}"


def _state_of(request: web.Request) -> _RequestSession | None:
    state: _RequestSession | None = request.get(_STATE_KEY)
    return state


def _cookie_value(header: str | None, name: str) -> str | None:
    """The first `name` cookie of a Cookie header. Hand-rolled: aiohttp's full cookie parsing
    is the largest cost of an otherwise cheap request, and only one cookie matters here."""
    if header is None:
        return None
    prefix = name + "="
    start = header.find(prefix)
    while start >= 0:
        if start == 0 or header[start - 1] in "; \t":
            start += len(prefix)
            end = header.find(";", start)
            value = (header[start:] if end < 0 else header[start:end]).strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            return value
        start = header.find(prefix, start + 1)
    return None


def _id_from_path(path: str) -> str | None:
    start = path.find(_JSESSIONID_PARAM)
    if start < 0:
        return None
    value = path[start + len(_JSESSIONID_PARAM):]
    for stop in (";", "/"):
        value = value.partition(stop)[0]
    return value or None


def session_middleware(manager: SessionManager) -> Middleware:
    cookie_name = manager.settings.session_cookie_name

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        raised: web.HTTPException | None = None
        try:
            response: web.StreamResponse = await handler(request)
        except web.HTTPException as exc:
            response = raised = exc
        except LockTimeoutError as exc:
            return web.Response(status=503, text=f"{exc}; retry shortly\n",
                                headers={"Retry-After": _RETRY_AFTER_SECONDS})
        except BaseException:
            state = _state_of(request)
            if state is not None:
                for ended in state.ended:
                    ended.active_requests -= 1
                await manager.abandon(state.session, state.lock)
            raise
        state = _state_of(request)
        path = request.path.partition(";")[0]  # without ;jsessionid=... for the ignore pattern
        if state is None:
            if manager.is_ignored(path):  # static files: counted, as MSM does, never loaded
                manager.stats.requests_ignored += 1
            if raised is not None:
                raise raised
            return response
        for ended in state.ended:
            await manager.finish(ended, None, manager.plan_save(ended, path))
        session = state.session
        try:
            work = manager.plan_save(session, path)
        except SessionTooLargeError as exc:
            work = None
            if not response.prepared:  # a streamed response is already on its way
                raised = None
                response = web.Response(status=413, text=f"{exc}\n")
        await manager.finish(session, state.lock, work)
        if (not session.invalidated and (session.new or session.id != state.requested_id)
                and not response.prepared):
            response.set_cookie(cookie_name, session.id, path="/", httponly=True,
                                samesite="Lax", secure=_is_https(request) or None)
        session.new = False  # the client has been told about it
        if raised is not None:
            raise raised
        return response

    return middleware


def _is_https(request: web.Request) -> bool:
    forwarded = request.headers.get("X-Forwarded-Proto")
    if forwarded is not None:
        return forwarded.partition(",")[0].strip().lower() == "https"
    return request.scheme == "https"
