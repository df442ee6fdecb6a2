"""The user's journey over HTTPS through `sessionha up`: the proxy terminates TLS, the app
servers behind it learn the scheme from the proxy alone, and the session cookie is
`Secure` exactly when the browser's side of the connection is https."""

from __future__ import annotations

import asyncio
import re
from http.cookies import SimpleCookie

import aiohttp
import pytest

from .client import TestUser, http_session
from .tls import https_session, https_url, tls_cluster

pytestmark = pytest.mark.e2e

TIMEOUT = 10.0


def session_cookies(response: aiohttp.ClientResponse) -> list[str]:
    return [h for h in response.headers.getall("Set-Cookie", []) if h.startswith("JSESSIONID=")]


async def raw_exchange(
    port: int, request: bytes, *, local_address: str = "127.0.0.1"
) -> tuple[bytes, bytes]:
    """One request on a new connection from `local_address`; (head, body) of the answer."""
    async with asyncio.timeout(TIMEOUT):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, local_addr=(local_address, 0)
        )
        try:
            writer.write(request)
            data = await reader.read()
        finally:
            writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


async def test_over_https_the_cookie_is_secure_and_the_session_survives_its_server() -> None:
    # trusted_proxies: only the proxy (127.0.0.1) may tell the app servers the scheme; a
    # client from another loopback address (127.0.0.2) talks to them as anyone would.
    with tls_cluster(trusted_proxies='"127.0.0.1"') as (cluster, ca):
        async with https_session(ca) as https:
            user = TestUser(https, https_url(cluster, ""))
            async with https.get(user._url(), headers={"Accept": "application/json"}) as first:
                assert first.status == 200
                (cookie,) = session_cookies(first)
                assert "; Secure" in cookie, cookie
                user.session_id = SimpleCookie(cookie)["JSESSIONID"].value
            entries = {"color": "blue", "fruit": "apple", "city": "Lyon"}
            for name, value in entries.items():
                await user.post(name, value)
            victim = user.answers[-1]["server"]
            survivor = "app2" if victim == "app1" else "app1"
            await asyncio.to_thread(cluster.kill, victim)
            async with https.get(
                user._url(),
                headers={"Accept": "application/json", "Cookie": f"JSESSIONID={user.session_id}"},
            ) as after:
                view = await after.json()
                # The survivor re-suffixes the id: the new cookie is Secure too.
                assert all("; Secure" in c for c in session_cookies(after))
            assert view["server"] == survivor and not view["new"]
            assert view["attributes"] == entries

        # The plain listener: a client claiming https is not believed (the proxy replaces
        # its X-Forwarded-Proto), so the cookie is not Secure.
        async with (
            http_session() as http,
            http.get(
                cluster.url("/test"),
                headers={"Accept": "application/json", "X-Forwarded-Proto": "https"},
            ) as spoofed,
        ):
            assert spoofed.status == 200
            (cookie,) = session_cookies(spoofed)
            assert "Secure" not in cookie, cookie

        # The app server directly: from 127.0.0.2, outside trusted_proxies, X-Forwarded-Proto
        # and X-Forwarded-For are the client's own words.
        app = cluster.topology.member(survivor).listen
        claim = (
            b"GET /test HTTP/1.1\r\nHost: app\r\nConnection: close\r\n"
            b"Accept: application/json\r\nX-Forwarded-Proto: https\r\n"
            b"X-Forwarded-For: 198.51.100.7\r\n\r\n"
        )
        head, _ = await raw_exchange(app.port, claim, local_address="127.0.0.2")
        cookie_line = re.search(rb"Set-Cookie: JSESSIONID=[^\r\n]*", head)
        assert cookie_line is not None and b"Secure" not in cookie_line.group(0)
        # The same words from the trusted proxy's address are believed.
        head, _ = await raw_exchange(app.port, claim, local_address="127.0.0.1")
        cookie_line = re.search(rb"Set-Cookie: JSESSIONID=[^\r\n]*", head)
        assert cookie_line is not None and b"; Secure" in cookie_line.group(0)
