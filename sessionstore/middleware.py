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
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware

from .client_address import IPAddress, client_address
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

MANAGER_KEY: web.AppKey[SessionManager] = web.AppKey("sessionstore_manager", SessionManager)

_RETRY_AFTER_SECONDS = "1"
_COOKIE_FLAGS = "; HttpOnly; Path=/; SameSite=Lax"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _RequestSession:
    """Per-request state, set by the middleware; the session is opened by the first
    `get_session` of the request (a request that never asks for it costs no lookup)."""

    __slots__ = ("cookie_sent", "ended", "lock", "manager", "request", "requested_id",
                 "session")

    def __init__(self, manager: SessionManager, request: web.Request) -> None:
        self.manager = manager
        self.request = request
        self.session: Session | None = None
        self.requested_id: str | None = None
        self.cookie_sent = False
        self.lock: HeldLock | None = None
        self.ended: list[Session] = []

    def client_address(self) -> IPAddress | None:
        """Who asks for a new session (computed only when one is first stored)."""
        headers = self.request.headers
        return client_address(self.request.remote, headers.get("X-Real-IP"),
                              headers.getall("X-Forwarded-For", ()),
                              self.manager.trusted_proxies)


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
    requested = _cookie_value(request.headers.get(hdrs.COOKIE),
                              manager.settings.session_cookie_name)
    state.cookie_sent = requested is not None
    if requested is None:
        requested = _id_from_path(request.path, manager.settings.session_url_parameter)
    path_qs = request.path_qs if manager.locks_by_uri else ""
    session, state.lock = await manager.open(requested, method=request.method, path_qs=path_qs)
    session.active_requests += 1  # until plan_save (or abandon) at the end of the request
    state.requested_id = requested
    state.session = session
    return session


def encode_url(request: web.Request, url: str) -> str:
    """`url` with `;jsessionid=ID` (the cookie name in lower case) when the request carried
    no session cookie and has a session; otherwise `url` unchanged. A query string or
    fragment stays after the id."""
    try:
        state = request[_STATE_KEY]
    except KeyError:
        return url
    session = state.session
    if session is None or state.cookie_sent or session.invalidated:
        return url
    cut = min((i for i in (url.find("?"), url.find("#")) if i >= 0), default=len(url))
    base = url[:cut]
    parameter = state.manager.settings.session_url_parameter
    if parameter in base:
        base = base[:base.index(parameter)]
    return f"{base}{parameter}{session.id}{url[cut:]}"


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


def _id_from_path(path: str, parameter: str) -> str | None:
    start = path.find(parameter)
    if start < 0:
        return None
    value = path[start + len(parameter):]
    for stop in (";", "/"):
        value = value.partition(stop)[0]
    return value or None


def session_middleware(manager: SessionManager) -> Middleware:
    cookie_name = manager.settings.session_cookie_name

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        state = request[_STATE_KEY] = _RequestSession(manager, request)
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
        for ended in state.ended:
            await manager.finish(ended, None, manager.plan_save(ended, path))
        try:
            work = manager.plan_save(session, path, client=state.client_address)
        except SessionTooLargeError as exc:
            work = None
            if not response.prepared:  # a streamed response is already on its way
                raised = None
                response = web.Response(status=413, text=f"{exc}\n")
        except SessionRateLimitError as exc:
            work = None
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
        if (not session.invalidated and (session.new or session.id != state.requested_id)
                and not response.prepared):
            # What response.set_cookie(..., path="/", httponly=True, samesite="Lax") sends,
            # without its Morsel machinery; ids and cookie names never need quoting.
            response.headers.add(hdrs.SET_COOKIE, f"{cookie_name}={session.id}{_COOKIE_FLAGS}"
                                 + ("; Secure" if _is_https(request, manager) else ""))
        session.new = False  # the client has been told about it
        if raised is not None:
            raise raised
        return response

    return middleware


def _is_https(request: web.Request, manager: SessionManager) -> bool:
    """The request's scheme: X-Forwarded-Proto counts only from a trusted proxy (Tomcat
    RemoteIpValve's protocolHeader); from anyone else it is the client's own claim."""
    forwarded = request.headers.get("X-Forwarded-Proto")
    peer = request.remote
    if forwarded is not None and peer and manager.trusted_proxies.trusts_peer(peer):
        return forwarded.rpartition(",")[2].strip().lower() == "https"
    return request.scheme == "https"
