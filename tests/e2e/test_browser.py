"""A real browser (Debian's Chromium, driven by Playwright) through the proxy.

Submit the form three times, kill the app that served them, reload: the three entries
are there and the other app's name is on the page. Once with cookies, once with a
browser that never gets a cookie (the session id travels in the URL, `;jsessionid=`),
and once over https, Chromium trusting the proxy's test key. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import Page, Route, sync_playwright

from .conftest import ClusterFactory
from .launch import LocalCluster
from .tls import https_url, spki_hash, tls_cluster

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-proxy-server",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# Headers urllib or the browser manage themselves, or that carry cookies.
_NOT_FORWARDED = frozenset({"cookie", "host", "content-length", "connection"})
_NOT_RETURNED = frozenset(
    {"set-cookie", "transfer-encoding", "connection", "content-length", "keep-alive"}
)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # hand 3xx back to the browser, which follows it itself


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects())


def forward_without_cookies(route: Route) -> None:
    """The browser's requests go out without cookies and come back without Set-Cookie,
    as from a browser whose user has disabled cookies."""
    request = route.request
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED}
    outgoing = urllib.request.Request(
        request.url, data=request.post_data_buffer, headers=headers, method=request.method
    )
    try:
        response = _OPENER.open(outgoing, timeout=10)
    except urllib.error.HTTPError as error:
        response = error
    with response:
        body = response.read()
        returned = {k: v for k, v in response.headers.items() if k.lower() not in _NOT_RETURNED}
        route.fulfill(status=response.status, headers=returned, body=body)


def submit(page: Page, name: str, value: str) -> None:
    page.fill("form.add input[name=dataName]", name)
    page.fill("form.add input[name=dataValue]", value)
    with page.expect_navigation():
        page.click("form.add button[type=submit]")


def served_by(page: Page) -> str:
    return page.inner_text("header strong")


def shown_entries(page: Page) -> list[str]:
    return page.locator("ul.data li").all_inner_texts()


def journey(
    page: Page, cluster: LocalCluster, screenshot: Path, url: str | None = None
) -> tuple[str, str]:
    page.goto(url or cluster.url("/test"))
    for name, value in (("color", "blue"), ("fruit", "apple"), ("city", "Lyon")):
        submit(page, name, value)
    first_server = served_by(page)
    assert shown_entries(page) == ["color = blue", "fruit = apple", "city = Lyon"]

    cluster.kill(first_server)
    page.goto(page.url)  # reload, as a GET (a reload of a POST result would resubmit it)
    assert shown_entries(page) == ["color = blue", "fruit = apple", "city = Lyon"]
    second_server = served_by(page)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(screenshot), full_page=True)
    return first_server, second_server


@pytest.mark.parametrize("cookies", [True, False], ids=["cookies", "url-rewriting"])
def test_browser_sees_its_entries_on_the_other_server(
    cluster_factory: ClusterFactory, cookies: bool
) -> None:
    cluster = cluster_factory()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            if not cookies:
                context.route("**/*", forward_without_cookies)
            page = context.new_page()
            mode = "cookies" if cookies else "url-rewriting"
            first, second = journey(page, cluster, ARTIFACTS / f"browser-failover-{mode}.png")
            assert {first, second} == {"app1", "app2"}
            session_cookies = [c for c in context.cookies() if c["name"] == "JSESSIONID"]
            if cookies:
                assert len(session_cookies) == 1
                assert ";jsessionid=" not in page.url
                # The proxy's status page shows the killed app down.
                page.goto(cluster.url("/_proxy/status"))
                down = page.locator("#rows td.down")
                down.wait_for()
                assert first in down.locator("xpath=..").inner_text()
                page.screenshot(path=str(ARTIFACTS / "proxy-status-after-kill.png"), full_page=True)
            else:
                assert session_cookies == []
                assert ";jsessionid=" in page.url  # the session travelled in the URL
            context.close()
        finally:
            browser.close()


def test_browser_over_https_with_the_test_key_trusted() -> None:
    """Once over https: Chromium trusts exactly the proxy's key (its SPKI hash), as a browser
    trusts a CA; the cookie it keeps is Secure, and the journey survives the kill."""
    with tls_cluster() as (cluster, _ca):
        spki = spki_hash(cluster.workdir / "certs" / "proxy.pem")
        args = [*CHROMIUM_ARGS, f"--ignore-certificate-errors-spki-list={spki}"]
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
            try:
                context = browser.new_context()
                page = context.new_page()
                url = https_url(cluster, "/test")
                first, second = journey(
                    page, cluster, ARTIFACTS / "browser-failover-https.png", url
                )
                assert {first, second} == {"app1", "app2"}
                assert page.url.startswith("https://")
                (cookie,) = [c for c in context.cookies() if c["name"] == "JSESSIONID"]
                assert cookie["secure"] is True
                context.close()
            finally:
                browser.close()
