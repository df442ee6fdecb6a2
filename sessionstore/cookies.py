"""The session cookie: the Set-Cookie values that hand out an id and that delete it.

Pure: no aiohttp, no I/O. The attributes are fixed by the settings, so they are joined once
and a response only adds the id (and `Secure` when `session_cookie_secure = "auto"` and the
request is https). The order of the attributes is what aiohttp's `set_cookie` writes, so the
defaults give exactly the header sessionstore always sent:
`JSESSIONID=<id>; HttpOnly; Path=/; SameSite=Lax`.
"""

from __future__ import annotations

import math

from .settings import SessionStoreSettings

# Expires beside Max-Age=0: clients that predate Max-Age (RFC 6265 prefers it) still drop it.
_EXPIRED = "; Expires=Thu, 01 Jan 1970 00:00:00 GMT"


class SessionCookies:
    """Set-Cookie values for one settings' session cookie name, path, domain and flags."""

    __slots__ = ("_deleted", "_deleted_secure", "_prefix", "_tail", "_tail_secure", "secure")

    def __init__(self, settings: SessionStoreSettings) -> None:
        domain = f"; Domain={settings.session_cookie_domain}" if settings.session_cookie_domain \
            else ""
        http_only = "; HttpOnly" if settings.session_cookie_http_only else ""
        path_and_site = (f"; Path={settings.session_cookie_path}"
                         f"; SameSite={settings.session_cookie_same_site}")
        max_age = settings.session_cookie_max_age
        lifetime = f"; Max-Age={math.ceil(max_age)}" if max_age > 0 else ""
        # "always" or SameSite=None (which browsers only accept with Secure): on every cookie;
        # "never": on none; "auto": on those that answer an https request.
        forced = settings.session_cookie_secure == "always" \
            or settings.session_cookie_same_site == "None"
        self.secure: bool | None = True if forced else (
            False if settings.session_cookie_secure == "never" else None)
        self._prefix = settings.session_cookie_name + "="
        self._tail = f"{domain}{http_only}{lifetime}{path_and_site}"
        self._tail_secure = self._tail + "; Secure"
        self._deleted = f"{self._prefix}{domain}{_EXPIRED}{http_only}; Max-Age=0{path_and_site}"
        self._deleted_secure = self._deleted + "; Secure"

    def with_secure(self, https: bool) -> bool:
        """Whether a cookie answering a request of that scheme carries Secure."""
        return https if self.secure is None else self.secure

    def issue(self, session_id: str, *, https: bool) -> str:
        """The Set-Cookie value that gives the client `session_id` (ids need no quoting)."""
        tail = self._tail_secure if self.with_secure(https) else self._tail
        return f"{self._prefix}{session_id}{tail}"

    def delete(self, *, https: bool) -> str:
        """The Set-Cookie value that makes the client drop the cookie: same name, path and
        domain (a browser only replaces a cookie those match), empty, Max-Age=0."""
        return self._deleted_secure if self.with_secure(https) else self._deleted
