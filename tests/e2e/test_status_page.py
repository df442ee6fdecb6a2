"""The proxy's status page in a real browser, left open while members are killed.

Without a reload, the page shows the killed app server down and the survivor taking
its session over, then a killed memcached node dead, each within seconds, pushed by
the proxy (server-sent events). Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, sync_playwright

from .conftest import ClusterFactory
from .test_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, served_by, submit

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

# Within two seconds of the kill, as the issue asks: the proxy pushes every second and
# polls the app servers' /health every half second in this topology.
WITHIN_MS = 2000


def row_of(page: Page, table: str, name: str) -> object:
    return page.locator(f"#{table} tr", has=page.locator(f"td:text-is('{name}')"))


def test_the_status_page_shows_kills_as_they_happen(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1500, "height": 1100})
            user = context.new_page()
            user.goto(cluster.url("/test"))
            for name, value in (("color", "blue"), ("fruit", "apple")):
                submit(user, name, value)
            first = served_by(user)

            status = context.new_page()
            status.goto(cluster.url("/_proxy/status"))
            status.locator("#live", has_text="live").wait_for(timeout=5000)
            status.evaluate("window.__sameDocument = true")  # gone if the page reloads
            for node in ("n1", "n2"):
                status.locator("#nodes tr", has=status.locator(f"td:text-is('{node}')")).locator(
                    "td.alive"
                ).first.wait_for(timeout=5000)

            cluster.kill(first)
            user.goto(user.url)  # the next request takes the session to the survivor
            second = served_by(user)
            assert second != first
            status.locator("#rows tr", has=status.locator(f"td:text-is('{first}')")).locator(
                "td.down"
            ).wait_for(timeout=WITHIN_MS)
            status.locator(
                "#log div.takeover", has_text=f"{second} took over 1 session from {first}"
            ).wait_for(timeout=WITHIN_MS)
            status.locator("#log div.upstream_down", has_text=f"{first} down").wait_for(
                timeout=WITHIN_MS
            )
            ARTIFACTS.mkdir(exist_ok=True)
            status.screenshot(path=str(ARTIFACTS / "status-page-app-killed.png"), full_page=True)

            # Crosswise: app1 backs up to n2 and app2 to n1; kill the survivor's node and
            # make it write a backup there.
            node = "n1" if second == "app2" else "n2"
            cluster.kill(node)
            submit(user, "after", "node loss")
            assert served_by(user) == second
            status.locator("#nodes tr", has=status.locator(f"td:text-is('{node}')")).locator(
                "td.dead"
            ).first.wait_for(timeout=WITHIN_MS + 1000)
            status.locator(
                "#log div.node_dead", has_text=f"{node} marked dead by {second}"
            ).wait_for(timeout=WITHIN_MS + 1000)
            status.screenshot(path=str(ARTIFACTS / "status-page-node-killed.png"), full_page=True)
            assert status.evaluate("window.__sameDocument") is True
            context.close()
        finally:
            browser.close()
