"""The classic test.jsp page, as HTML and as JSON (pure: no aiohttp here).

The parts that depend only on the server (route, asset URLs) are rendered once when the
app is built; a request only fills in the session, so the hot path is a few escapes and
one join.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from functools import lru_cache
from html import escape
from typing import NamedTuple


class SessionView(NamedTuple):
    """What the page shows of one session on one request (a tuple: cheap to build)."""

    address: str
    session_id: str
    new: bool
    created: float
    last_accessed: float
    max_inactive_interval: float
    attributes: Iterable[tuple[str, object]]
    action_url: str
    logout_url: str
    notice: str = ""
    login_url: str = "/login"
    user: str | None = None  # the session's `user` attribute, set by signing in


def _text(value: object) -> str:
    """An attribute as the JSP's toString() would print it; JSON for non-strings."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _when(epoch: float) -> str:
    return _second(int(epoch))


@lru_cache(maxsize=256)
def _escaped(text: str) -> str:
    """escape() of the texts that repeat on every request (the address, the form URLs)."""
    return escape(text)


@lru_cache(maxsize=4096)
def _second(epoch: int) -> str:
    """Formatted once per distinct second: creation times repeat on every request."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


class DemoPage:
    """The /test page (test.jsp) of one server; build once per app."""

    def __init__(self, *, route: str, css_url: str, logo_url: str) -> None:
        route_html = escape(route)
        self._head = (
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>Session test · {route_html}</title>\n"
            f'<link rel="stylesheet" href="{escape(css_url)}">\n'
            f'<link rel="icon" type="image/png" href="{escape(logo_url)}">\n'
            "</head>\n<body>\n<main>\n"
            f'<header><img src="{escape(logo_url)}" alt="" width="56" height="56">'
            f"<div><h1>Session test</h1><p>served by <strong>{route_html}</strong></p></div>"
            f'<span class="route" title="jvm route">{route_html}</span></header>\n'
        )
        self._route_html = route_html
        self._route = route

    def html(self, view: SessionView, client: str = "") -> str:
        """The page; `client` is the address Server Info names (as trusted_proxies decide)."""
        rows = "".join(
            f"<li>{escape(name)} = {escape(_text(value))}</li>\n" for name, value in view.attributes
        )
        data = f'<ul class="data">\n{rows}</ul>' if rows else '<p class="empty">No data yet.</p>'
        notice = f'<p class="notice">{escape(view.notice)}</p>\n' if view.notice else ""
        state = "new" if view.new else "existing"
        action_url = _escaped(view.action_url)
        return (
            f"{self._head}{notice}"
            "<section><h2>Server Info:</h2>\n<dl>"
            f"<dt>Address</dt><dd>{_escaped(view.address)}</dd>"
            f"<dt>Client</dt><dd>{_escaped(client)}</dd>"
            f"<dt>Route</dt><dd>{self._route_html}</dd></dl></section>\n"
            "<section><h2>Session</h2>\n<dl>"
            f'<dt>ID</dt><dd><code id="session-id">{escape(view.session_id)}</code>'
            f' <span class="badge {state}">{state}</span></dd>'
            f"<dt>Created</dt><dd>{_when(view.created)}</dd>"
            f"<dt>Last accessed</dt><dd>{_when(view.last_accessed)}</dd>"
            f"<dt>Expires after</dt><dd>{view.max_inactive_interval:g} s idle</dd></dl></section>\n"
            f"{self._sign_in(view)}"
            f"<section><h2>Session Data:</h2>\n{data}</section>\n"
            f'<form class="add" method="POST" action="{action_url}">\n'
            '<label>Name <input type="text" size="20" name="dataName" required></label>\n'
            '<label>Value <input type="text" size="20" name="dataValue"></label>\n'
            '<button type="submit">Add to session</button>\n</form>\n'
            f'<form class="logout" method="POST" action="{_escaped(view.logout_url)}">'
            '<button type="submit">End session</button></form>\n'
            f'<footer><a href="{action_url}">Reload</a> · '
            '<a href="/health">health</a> · <a href="/metrics">metrics</a></footer>\n'
            "</main>\n</body>\n</html>\n"
        )

    def _sign_in(self, view: SessionView) -> str:
        """Who is signed in, and the sign-in form (signing in gives the session a new id)."""
        if view.user is None:
            return _anonymous_sign_in(view.login_url)
        return (
            "<section><h2>User</h2>\n"
            f'<p class="user">Signed in as <strong id="user">{escape(view.user)}</strong></p>\n'
            f'<form class="login" method="POST" action="{escape(view.login_url)}">\n'
            '<label>User name <input type="text" size="20" name="username" required></label>\n'
            '<button type="submit">Sign in</button>\n</form></section>\n'
        )

    def json(self, view: SessionView) -> str:
        """The object ARCHITECTURE.md promises, attributes in the order first set."""
        return json.dumps(
            {
                "server": self._route,
                "address": view.address,
                "session_id": view.session_id,
                "new": view.new,
                "user": view.user,
                "attributes": dict(view.attributes),
            },
            ensure_ascii=False,
        )


@lru_cache(maxsize=256)
def _anonymous_sign_in(login_url: str) -> str:
    """The sign-in section for nobody signed in: the same for every request of one URL."""
    return (
        '<section><h2>User</h2>\n<p class="user">Not signed in.</p>\n'
        f'<form class="login" method="POST" action="{escape(login_url)}">\n'
        '<label>User name <input type="text" size="20" name="username" required></label>\n'
        '<button type="submit">Sign in</button>\n</form></section>\n'
    )
