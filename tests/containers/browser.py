"""A user's browser, reduced to what the container tests need: one JSESSIONID cookie and
the JSON form of /test, through the proxy's published port on 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any

COOKIE = "JSESSIONID"


class PageError(RuntimeError):
    """/test did not answer 200 with a JSON page."""


@dataclass
class Page:
    """What GET or POST /test answered."""

    server: str
    session_id: str
    new: bool
    attributes: dict[str, str]


@dataclass
class Browser:
    """Keeps the session cookie like a browser does; every request has a timeout."""

    port: int
    timeout: float = 10.0
    session_id: str | None = None
    history: list[Page] = field(default_factory=list)

    def get(self) -> Page:
        return self._send(None)

    def post(self, name: str, value: str) -> Page:
        return self._send(urllib.parse.urlencode({"dataName": name, "dataValue": value}).encode())

    def _send(self, form: bytes | None) -> Page:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/test", data=form,
            headers={"Accept": "application/json"}, method="GET" if form is None else "POST",
        )
        if self.session_id is not None:
            request.add_header("Cookie", f"{COOKIE}={self.session_id}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body: dict[str, Any] = json.loads(response.read())
                set_cookie = response.headers.get_all("Set-Cookie") or []
        except urllib.error.HTTPError as exc:
            exc.close()  # an error status still holds the connection
            raise PageError(f"{request.method} /test answered {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
            raise PageError(f"{request.method} /test failed: {exc!r}") from exc
        for header in set_cookie:
            cookie = SimpleCookie(header)
            if COOKIE in cookie:
                self.session_id = cookie[COOKIE].value
        try:
            page = Page(
                server=str(body["server"]), session_id=str(body["session_id"]),
                new=bool(body["new"]),
                attributes={str(k): str(v) for k, v in body["attributes"].items()},
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise PageError(f"{request.method} /test: unexpected page {body!r}") from exc
        self.history.append(page)
        return page


def first_page(port: int, *, within: float) -> float:
    """Seconds until GET /test first answers 200 through the proxy; raises after `within`."""
    start = time.monotonic()
    deadline = start + within
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            Browser(port, timeout=2.0).get()
            return time.monotonic() - start
        except PageError as exc:
            last = exc
            time.sleep(0.2)
    raise PageError(f"no 200 from /test within {within}s; last error: {last!r}")


def upstream_states(port: int) -> dict[str, str]:
    """Upstream name -> state, from the proxy's /_proxy/status.json."""
    url = f"http://127.0.0.1:{port}/_proxy/status.json"
    try:
        with urllib.request.urlopen(url, timeout=5.0) as response:
            status: dict[str, Any] = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        exc.close()
        raise PageError(f"GET /_proxy/status.json answered {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        raise PageError(f"GET /_proxy/status.json failed: {exc!r}") from exc
    return {str(u["name"]): str(u["state"]) for u in status["upstreams"]}


def wait_upstream_up(port: int, name: str, *, within: float) -> None:
    """Until the proxy's status page shows upstream `name` up (it passed its health checks)."""
    deadline = time.monotonic() + within
    states = upstream_states(port)
    while states.get(name) != "up":
        if time.monotonic() > deadline:
            raise PageError(f"upstream {name} is not up after {within}s: {states}")
        time.sleep(0.2)
        states = upstream_states(port)
