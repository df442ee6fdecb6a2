"""The session demo routes: /test (and /test.jsp) and /logout.

What a request may carry is parsed before the session is touched, so garbage input is
refused without creating or loading a session.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from aiohttp import web

from sessionstore import Session, encode_url, get_session

from .errors import BadFormError, InputTooLargeError, RequestError
from .forms import Fields, apply_entry, data_entry, parse_urlencoded
from .pages import DemoPage, SessionView
from .settings import AppServerSettings

# A `;jsessionid=ID` path parameter after a route (cookies disabled); sessionstore reads it.
JSESSIONID_PARAMETER = r"{jsid:;jsessionid=[^/?]*}"

_FORM = "application/x-www-form-urlencoded"
_MULTIPART = "multipart/form-data"
_HTML = "text/html"
_JSON = "application/json"


def error_response(error: RequestError) -> web.Response:
    """The one place a request error becomes HTTP: its status and its message as text."""
    return web.Response(status=error.status, text=f"{error}\n")


def local_address(request: web.BaseRequest, fallback: str) -> str:
    """IP:PORT this request came in on (Tomcat's getLocalAddr() + getLocalPort())."""
    transport = request.transport
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    if not sockname:
        return fallback
    return _address(sockname[0], sockname[1])


def fixed_local_address(host: str, port: int) -> str | None:
    """The one address every request comes in on, when listening on one IP and a fixed port
    (no per-request getsockname); None when it depends on the connection."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None  # a name may resolve to several addresses
    if ip.is_unspecified or port == 0:
        return None
    return _address(host, port)


@lru_cache(maxsize=64)
def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def read_form(request: web.Request, limit: int) -> Fields:
    """The body's fields for an urlencoded or multipart POST; other bodies carry none."""
    length = request.content_length
    if length is not None and length > limit:
        raise InputTooLargeError(
            f"request body is too large: {length} bytes, limit {limit} (client_max_body_size)"
        )
    content_type = request.content_type
    try:
        if content_type == _FORM:
            return parse_urlencoded(await request.read(), where="form body")
        if content_type == _MULTIPART:
            form = await request.post()
            return [(name, value) for name, value in form.items() if isinstance(value, str)]
    except web.HTTPRequestEntityTooLarge:
        raise InputTooLargeError(
            f"request body is too large: over {limit} bytes (client_max_body_size)"
        ) from None
    except (UnicodeError, ValueError):
        # aiohttp's multipart reader signals malformed parts with these.
        raise BadFormError("form body is not valid multipart/form-data in UTF-8") from None
    return ()


class SessionPages:
    """Handlers for one server; `page` holds the pre-rendered, server-wide parts."""

    def __init__(self, *, settings: AppServerSettings, page: DemoPage) -> None:
        self._settings = settings
        self._page = page
        self._fallback_address = settings.listen
        self._fixed_address = fixed_local_address(settings.listen_host, settings.listen_port)

    async def test(self, request: web.Request) -> web.Response:
        settings = self._settings
        try:
            raw_query = request.rel_url.raw_query_string
            query = parse_urlencoded(raw_query, where="query string") if raw_query else ()
            body = (
                await read_form(request, settings.client_max_body_size)
                if request.method == "POST"
                else ()
            )
            entry = data_entry(query, body, max_name_length=settings.max_attribute_name_length)
        except RequestError as exc:
            return error_response(exc)
        session = await get_session(request)
        if entry is not None:
            try:
                apply_entry(session, entry, max_attributes=settings.max_session_attributes)
            except RequestError as exc:
                return error_response(exc)
        view = self._view(request, session)
        if _JSON in request.headers.get("Accept", ""):
            return web.Response(text=self._page.json(view), content_type=_JSON)
        return web.Response(text=self._page.html(view), content_type=_HTML)

    async def logout(self, request: web.Request) -> web.Response:
        """Invalidate the session (gone locally and from memcached), then back to /test."""
        session = await get_session(request)
        session.invalidate()
        return web.Response(status=303, headers={"Location": "/test"})

    def _view(self, request: web.Request, session: Session) -> SessionView:
        action_url = encode_url(request, "/test")
        # encode_url only ever appends ";jsessionid=ID": reuse that suffix for /logout
        logout_url = "/logout" + action_url[5:]
        return SessionView(
            self._fixed_address or local_address(request, self._fallback_address),
            session.id,
            session.new,
            session.created,
            session.last_accessed,
            session.max_inactive_interval,
            session.items(),
            action_url,
            logout_url,
        )
