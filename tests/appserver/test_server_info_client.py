"""The /test page's Server Info names the client: the peer, or the client a trusted proxy
names (X-Forwarded-For), never what an untrusted peer claims."""

from __future__ import annotations

import re

from tests.support.memcached import MemcachedProcess

from .apps import AppClient

CLIENT = re.compile(r"<dt>Client</dt><dd>([^<]*)</dd>")


async def test_server_info_shows_the_client_a_trusted_proxy_names(
    app_client: AppClient, memcached: MemcachedProcess
) -> None:
    forwarded = {"X-Forwarded-For": "198.51.100.7, 203.0.113.9"}
    trusting = await app_client()  # trusted_proxies by default: loopback and private ranges
    page = await (await trusting.get("/test", headers=forwarded)).text()
    assert CLIENT.findall(page) == ["203.0.113.9"]  # the last hop the proxy added
    page = await (await trusting.get("/test")).text()
    assert CLIENT.findall(page) == ["127.0.0.1"]

    distrusting = await app_client(memcached, trusted_proxies="")
    page = await (await distrusting.get("/test", headers=forwarded)).text()
    assert CLIENT.findall(page) == ["127.0.0.1"]  # a claim from a peer nobody trusts
