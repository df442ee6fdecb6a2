"""How a session id travels with a request: the cookie, `;jsessionid=` in the path when URL
tracking is on (tracking_modes = "cookie,url"), and whether the request came over https.

Shared by the native middleware and the aiohttp-session adapter, so both read and write
ids the same way.
"""

from __future__ import annotations

from aiohttp import hdrs, web

from .client_address import IPAddress, TrustedProxies, client_address
from .planning import ClientAddress
from .settings import SessionStoreSettings


def requested_id(request: web.BaseRequest,
                 settings: SessionStoreSettings) -> tuple[str | None, bool]:
    """The session id the request names and whether it came as a cookie. The cookie wins,
    as in Tomcat; the path parameter counts only with URL tracking on, so with
    tracking_modes = "cookie" an id that came only in the URL is never adopted."""
    from_cookie = cookie_value(request.headers.get(hdrs.COOKIE), settings.session_cookie_name)
    if from_cookie is not None or not settings.url_tracking:
        return from_cookie, from_cookie is not None
    return id_from_path(request.path, settings.session_url_parameter), False


def cookie_value(header: str | None, name: str) -> str | None:
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


def id_from_path(path: str, parameter: str) -> str | None:
    start = path.find(parameter)
    if start < 0:
        return None
    value = path[start + len(parameter):]
    for stop in (";", "/"):
        value = value.partition(stop)[0]
    return value or None


def with_session_id(url: str, parameter: str, session_id: str) -> str:
    """`url` with `<parameter><session_id>` at the end of its path (before a query string or
    fragment), replacing one already there."""
    cut = min((i for i in (url.find("?"), url.find("#")) if i >= 0), default=len(url))
    base = url[:cut]
    if parameter in base:
        base = base[:base.index(parameter)]
    return f"{base}{parameter}{session_id}{url[cut:]}"


def is_https(request: web.BaseRequest, trusted: TrustedProxies) -> bool:
    """The request's scheme: X-Forwarded-Proto counts only from a trusted proxy (Tomcat
    RemoteIpValve's protocolHeader); from anyone else it is the client's own claim."""
    forwarded = request.headers.get("X-Forwarded-Proto")
    peer = request.remote
    if forwarded is not None and peer and trusted.trusts_peer(peer):
        return forwarded.rpartition(",")[2].strip().lower() == "https"
    return request.scheme == "https"


def requesting_client(request: web.BaseRequest, trusted: TrustedProxies) -> ClientAddress:
    """Who asks for a new session, as the creation rate limit counts it: worked out only
    when a session is first stored. A closure, not state kept on the request's side: the
    request holding something that holds it would be a cycle left to the collector."""
    def client() -> IPAddress | None:
        headers = request.headers
        return client_address(request.remote, headers.get("X-Real-IP"),
                              headers.getall("X-Forwarded-For", ()), trusted)

    return client
