"""One user of /test through the proxy, with a cookie or with URL rewriting."""

from __future__ import annotations

from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any

import aiohttp

REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=10)


def http_session() -> aiohttp.ClientSession:
    """No cookie jar: each TestUser carries its own JSESSIONID, as a separate browser would."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), timeout=REQUEST_TIMEOUT)


class PageError(Exception):
    """/test answered something other than a 200 JSON view."""


@dataclass
class TestUser:
    """A browser-like user: sends its session id back the way it was told to."""

    __test__ = False  # not a pytest test class

    http: aiohttp.ClientSession
    base_url: str
    cookies: bool = True
    session_id: str | None = None
    answers: list[dict[str, Any]] = field(default_factory=list)

    def _url(self) -> str:
        if not self.cookies and self.session_id is not None:
            return f"{self.base_url}/test;jsessionid={self.session_id}"
        return f"{self.base_url}/test"

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.cookies and self.session_id is not None:
            headers["Cookie"] = f"JSESSIONID={self.session_id}"
        return headers

    async def get(self) -> dict[str, Any]:
        return await self._call("GET", None)

    async def post(self, name: str, value: str) -> dict[str, Any]:
        return await self._call("POST", {"dataName": name, "dataValue": value})

    async def _call(self, method: str, form: dict[str, str] | None) -> dict[str, Any]:
        async with self.http.request(
            method, self._url(), headers=self._headers(), data=form, allow_redirects=False
        ) as response:
            body = await response.text()
            if response.status != 200:
                raise PageError(f"{method} /test -> {response.status}: {body[:200]}")
            view: dict[str, Any] = await response.json()
            set_cookie = SimpleCookie()
            for header in response.headers.getall("Set-Cookie", []):
                set_cookie.load(header)
        if self.cookies and "JSESSIONID" in set_cookie:
            self.session_id = set_cookie["JSESSIONID"].value
            # The cookie names the session the page showed (its suffix may be newer: a
            # backup that failed after the page was rendered re-suffixes the id).
            if self.session_id.split("-")[0] != view["session_id"].split("-")[0]:
                raise PageError(f"cookie {self.session_id} but page shows {view['session_id']}")
        elif not self.cookies:
            self.session_id = view["session_id"]
        self.answers.append(view)
        return view
