"""Static files carry validators and caching; ignored URIs never touch a session."""

from __future__ import annotations

import re

from appserver.static import etag_matches
from tests.support.memcached import MemcachedProcess

from .apps import AppClient, Client
from .memcached_stats import command_counts


async def test_static_files_have_caching_headers_and_revalidate(app_client: AppClient) -> None:
    client = await app_client()
    response = await client.get("/static/style.css")
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/css; charset=utf-8"
    assert response.headers["Cache-Control"] == "public, max-age=86400"
    assert "Last-Modified" in response.headers
    etag = response.headers["ETag"]
    again = await client.get("/static/style.css", headers={"If-None-Match": etag})
    assert again.status == 304 and await again.read() == b""
    image = await client.get("/static/logo.png")
    assert image.content_type == "image/png" and (await image.read())[:4] == b"\x89PNG"
    assert (await client.get("/static/nothing.css")).status == 404
    assert (await client.get("/static/../app.py")).status == 404


async def test_the_page_links_its_assets_with_a_content_version(app_client: AppClient) -> None:
    client = await app_client()
    html = await (await client.get("/test")).text()
    css = re.search(r'href="(/static/style\.css\?v=[0-9a-f]+)"', html)
    assert css is not None and (await client.get(css[1])).status == 200


def test_weak_and_listed_etags_match() -> None:
    assert etag_matches('"abc"', 'W/"abc"') and etag_matches('"abc"', '"x", "abc"')
    assert etag_matches('"abc"', "*") and not etag_matches('"abc"', '"abd"')


IGNORED = ("/static/style.css", "/static/logo.png", "/favicon.ico")


async def test_ignored_uris_never_load_or_back_up_a_session(
    app_client: AppClient, memcached: MemcachedProcess
) -> None:
    client = await app_client()
    await client.post("/test", data={"dataName": "a", "dataValue": "1"})  # a session, a cookie
    before = await command_counts(memcached)
    for path in IGNORED:
        response = await client.get(path)
        assert response.status == 200
        assert "Set-Cookie" not in response.headers
    assert await command_counts(memcached) == before  # memcached saw nothing
    assert (await stats(client))["sessionha_sessionstore_sessions_created_total"] == 1


async def test_ignored_uris_are_counted_in_the_statistics(app_client: AppClient) -> None:
    client = await app_client()
    ignored = "sessionha_sessionstore_requests_ignored_total"
    before = (await stats(client))[ignored]
    for path in IGNORED:
        assert (await client.get(path)).status == 200
    assert (await stats(client))[ignored] == before + len(IGNORED)


async def stats(client: Client) -> dict[str, float]:
    """The un-labelled samples of /metrics by name."""
    response = await client.get("/metrics")
    samples = {}
    for line in (await response.text()).splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.split()
            samples[name] = float(value)
    return samples
