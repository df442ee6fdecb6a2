"""X-Request-ID and the access log: the proxy's id followed into the app server's log line,
an id of our own for direct requests, nginx's combined format, and JSON lines."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from proxy.server import ProxyServer
from proxy.settings import settings_from_mapping
from tests.support.memcached import MemcachedProcess

from .apps import AppClient
from .processes import (
    AppServerProcess,
    appserver_with_memcached,
    exchange,
    request,
    start_appserver,
    stop_process,
)

OWN_ID = re.compile(r"[0-9a-f]{32}")
# nginx's combined format, then $request_id and $request_time.
COMBINED = re.compile(
    r'(?P<addr>\S+) - (?P<user>\S+) \[(?P<time>\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4})\] '
    r'"(?P<request>[^"]*)" (?P<status>\d{3}) (?P<bytes>\d+) "(?P<referer>[^"]*)" '
    r'"(?P<agent>[^"]*)" (?P<id>\S+) (?P<seconds>\d+\.\d{3})'
)


async def test_a_direct_request_gets_an_id_of_its_own(app_client: AppClient) -> None:
    client = await app_client()
    ids = set()
    for path in ("/test", "/nowhere", "/health"):
        response = await client.get(path)
        assert OWN_ID.fullmatch(response.headers["X-Request-ID"]), path
        ids.add(response.headers["X-Request-ID"])
    assert len(ids) == 3


async def test_what_no_route_takes_is_answered_as_aiohttp_s_router_would(
    app_client: AppClient,
) -> None:
    """Without aiohttp middlewares, the app server's last route answers the rest: 405 with
    Allow for a known path, 404 otherwise, both with an id and counted."""
    client = await app_client()
    put = await client.put("/test")
    assert put.status == 405 and put.headers["Allow"] == "GET,HEAD,POST"
    assert OWN_ID.fullmatch(put.headers["X-Request-ID"])
    for path in ("/nowhere/deeper", "/test/", "/static/nothing.css"):
        missing = await client.get(path)
        assert missing.status == 404 and OWN_ID.fullmatch(missing.headers["X-Request-ID"])
    metrics = await (await client.get("/metrics")).text()
    assert 'sessionha_appserver_http_requests_total{method="PUT",status="405"} 1.0' in metrics
    assert 'sessionha_appserver_http_requests_total{method="GET",status="404"} 3.0' in metrics


async def test_the_proxy_s_id_is_kept_from_a_trusted_peer_only(
    app_client: AppClient, memcached: MemcachedProcess
) -> None:
    trusting = await app_client()  # trusted_proxies by default: loopback and private ranges
    given = {"X-Request-ID": "proxy-7f3a.1"}
    # Kept (the access log shows it, see below) and not repeated: the proxy returns its
    # own ids, and a second copy would make every answer's head unique.
    assert "X-Request-ID" not in (await trusting.get("/test", headers=given)).headers
    # A 404 is an HTTPException: the same holds for it.
    assert "X-Request-ID" not in (await trusting.get("/x", headers=given)).headers
    for garbage in ('a b', 'quote"d', "x" * 129, ""):
        answer = await trusting.get("/test", headers={"X-Request-ID": garbage})
        assert OWN_ID.fullmatch(answer.headers["X-Request-ID"]), garbage

    distrusting = await app_client(memcached, trusted_proxies="")
    answer = await distrusting.get("/test", headers=given)
    assert OWN_ID.fullmatch(answer.headers["X-Request-ID"])


@pytest.fixture(scope="module")
def text_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServerProcess]:
    """`python -m appserver` with the defaults: access log on, text lines."""
    yield from appserver_with_memcached(tmp_path_factory.mktemp("text"))


@pytest.fixture(scope="module")
def json_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServerProcess]:
    yield from appserver_with_memcached(tmp_path_factory.mktemp("json"), LOG_FORMAT="json")


async def test_an_access_line_is_combined_plus_the_request_id_and_time(
    text_log: AppServerProcess,
) -> None:
    since = text_log.log_size()
    headers = {"X-Request-ID": b"from-the-proxy-1", "X-Forwarded-For": b"203.0.113.9",
               "Referer": b"http://example.test/a"}
    response = await exchange(text_log.port, request("/test?x=1", "combined-1", headers=headers))
    assert response.status == 200 and b"X-Request-ID" not in response.head  # the proxy's
    line = text_log.log_until('"combined-1"', since=since).splitlines()[-1]
    match = COMBINED.fullmatch(line)
    assert match is not None, line
    assert match["addr"] == "203.0.113.9"  # forwarded by a trusted peer (loopback)
    assert match["request"] == "GET /test?x=1 HTTP/1.1" and match["status"] == "200"
    assert int(match["bytes"]) == len(response.body)
    assert match["referer"] == "http://example.test/a" and match["agent"] == "combined-1"
    assert match["id"] == "from-the-proxy-1" and float(match["seconds"]) < 5


async def test_a_direct_request_is_logged_with_the_id_it_was_given(
    text_log: AppServerProcess,
) -> None:
    since = text_log.log_size()
    response = await exchange(text_log.port, request("/nowhere", 'direct "quoted" agent'))
    assert response.status == 404
    given = re.search(rb"X-Request-ID: (\w+)", response.head)
    assert given is not None and OWN_ID.fullmatch(given[1].decode())
    line = text_log.log_until("quoted", since=since).splitlines()[-1]
    match = COMBINED.fullmatch(line)
    assert match is not None, line
    assert match["addr"] == "127.0.0.1" and match["id"] == given[1].decode()
    assert match["agent"] == r"direct \x22quoted\x22 agent"  # as nginx escapes a quote


async def test_json_lines_parse_one_by_one_access_and_error_alike(
    json_log: AppServerProcess,
) -> None:
    since = json_log.log_size()
    headers = {"X-Request-ID": b"json-id-1", "X-Forwarded-For": b"198.51.100.4"}
    assert (await exchange(json_log.port, request("/test", "json-1", headers=headers))).status \
        == 200
    # A request line that is no HTTP: aiohttp's parser answers 400, we log one INFO line.
    refused = await exchange(json_log.port, b"GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n")
    assert refused.status == 400
    json_log.log_until("json-1", since=since)
    json_log.log_until("bad request from", since=since)
    lines = [json.loads(line) for line in json_log.log_text().splitlines()]
    assert all({"time", "level", "logger"} <= line.keys() for line in lines)
    assert any(line.get("message", "").startswith("appserver app1 listening") for line in lines)
    [access] = [line for line in lines if line.get("http_user_agent") == "json-1"]
    assert access["logger"] == "appserver.access" and access["level"] == "info"
    assert access["remote_addr"] == "198.51.100.4" and access["request_id"] == "json-id-1"
    assert access["request"] == "GET /test HTTP/1.1" and access["status"] == 200
    assert access["body_bytes_sent"] > 0 and 0 <= access["request_time"] < 5
    assert access["http_referer"] is None
    bad = [line for line in lines if line.get("message", "").startswith("bad request from")]
    assert bad and bad[0]["level"] == "info" and "exception" not in bad[0]


def test_the_access_log_can_be_turned_off(
    tmp_path: Path, memcached_factory: Callable[..., MemcachedProcess]
) -> None:
    import asyncio

    server = start_appserver("app1", memcached_factory(), log_dir=tmp_path, ACCESS_LOG="false")
    try:
        response = asyncio.run(exchange(server.port, request("/test", "silent-1")))
        assert response.status == 200 and b"X-Request-ID: " in response.head
    finally:
        stop_process(server.process)
    assert "silent-1" not in server.log_text() and "listening" in server.log_text()


async def test_one_request_has_one_id_in_the_proxys_and_the_app_servers_access_logs(
    text_log: AppServerProcess, tmp_path: Path
) -> None:
    proxy_log = tmp_path / "proxy-access.log"
    since = text_log.log_size()
    proxy_settings = settings_from_mapping(
        {
            "listen": "127.0.0.1:0",
            "upstreams": f"app1=127.0.0.1:{text_log.port}",
            "health_interval": 0,
            "access_log": str(proxy_log),
        }
    )
    async with ProxyServer(proxy_settings) as proxy:
        response = await exchange(proxy.port, request("/test?both=1", "both-logs"))
    assert response.status == 200
    returned = re.search(rb"\r\nX-Request-ID: ([^\r\n]+)", response.head)
    assert returned is not None and response.head.count(b"X-Request-ID") == 1
    request_id = returned[1].decode()
    (proxy_line,) = proxy_log.read_text().splitlines()
    app_line = text_log.log_until('"both-logs"', since=since).splitlines()[-1]
    # Both lines are nginx's combined format with the id right after the user agent.
    assert proxy_line.split('"both-logs" ')[1].split()[0] == request_id
    assert app_line.split('"both-logs" ')[1].split()[0] == request_id
