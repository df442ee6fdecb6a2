"""dns: upstreams with real servers: admission by health check, drain, sticky routes, DNS trouble.

Three app servers listen on 127.0.0.1, 127.0.0.2 and 127.0.0.3 with the same port (all
of 127.0.0.0/8 is loopback on Linux), as the tasks of one service do behind one DNS
name. The proxy's resolver is a real function over a set of those addresses that the
test edits, the way an orchestrator adds and removes tasks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from proxy.server import ProxyServer
from proxy.settings import ProxySettings, settings_from_mapping
from tests.proxy.support import LoopbackServer, Response, exchange, get, read_response

HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")


@dataclass
class AppServer(LoopbackServer):
    """An app server: `GET /health` answers its route as JSON (503 while not healthy)."""

    host: str
    route: str
    healthy: bool = True
    silent: bool = False  # reads health checks and never answers them
    hits: int = 0
    health_checks: int = 0
    gate: asyncio.Event = field(default_factory=asyncio.Event)  # /slow waits for it
    slow_started: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self.serving(writer):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1]
                if path == b"/health":
                    self.health_checks += 1
                    if self.silent:
                        await self.gate.wait()
                    status = 200 if self.healthy else 503
                    body = json.dumps({"status": "ok", "route": self.route}).encode()
                else:
                    self.hits += 1
                    if path == b"/slow":
                        self.slow_started.set()
                        await self.gate.wait()
                    status, body = 200, json.dumps({"server": self.route}).encode()
                writer.write(
                    b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                    % (status, len(body))
                    + body
                )
                await writer.drain()

    async def start(self, port: int) -> None:
        self.server = await asyncio.start_server(self.handle, self.host, port)


@dataclass
class Apps:
    port: int
    by_host: dict[str, AppServer]

    def __getitem__(self, host: str) -> AppServer:
        return self.by_host[host]


@pytest.fixture
async def apps() -> AsyncIterator[Apps]:
    """app1..app3 on 127.0.0.1..3, one port; every one stopped at the end."""
    servers: list[AppServer] = []
    try:
        for _ in range(5):  # the port picked on .1 may be taken on .2 or .3: pick again
            servers = [AppServer(host, f"app{i}") for i, host in enumerate(HOSTS, 1)]
            await servers[0].start(0)
            assert servers[0].server is not None
            port = int(servers[0].server.sockets[0].getsockname()[1])
            try:
                for server in servers[1:]:
                    await server.start(port)
            except OSError:
                for server in servers:
                    await server.stop()
                continue
            break
        else:
            pytest.fail("no port free on 127.0.0.1, .2 and .3 at once")
        yield Apps(port, {server.host: server for server in servers})
    finally:
        for server in servers:
            server.gate.set()
            await server.stop()


class Addresses:
    """A resolver over a set of addresses the test edits (a DNS zone in miniature)."""

    def __init__(self, *hosts: str) -> None:
        self.hosts = list(hosts)
        self.failing = False
        self.calls: list[float] = []

    async def resolve(self, name: str) -> list[str]:
        self.calls.append(asyncio.get_running_loop().time())
        if self.failing:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return list(self.hosts)


def dns_settings(target: str, **overrides: object) -> ProxySettings:
    raw: dict[str, object] = {
        "listen": "127.0.0.1:0",
        "upstreams": target,
        "policy": "sticky",
        "resolver_valid": 0.1,
        "health_interval": 0.1,
        "health_timeout": 1,
        "proxy_connect_timeout": 2,
        "proxy_read_timeout": 5,
    }
    raw.update(overrides)
    return settings_from_mapping(raw)


async def status(proxy: ProxyServer) -> dict[str, Any]:
    response = await exchange(proxy.port, get("/_proxy/status.json"))
    assert response.status == 200
    document: dict[str, Any] = json.loads(response.body)
    return document


def upstream_at(document: dict[str, Any], address: str) -> dict[str, Any] | None:
    for upstream in document["upstreams"]:
        if upstream["address"] == address:
            return dict(upstream)
    return None


async def until(
    proxy: ProxyServer, ready: Callable[[dict[str, Any]], bool], within: float = 10.0
) -> dict[str, Any]:
    """Poll status.json until `ready(document)` (bounded in time)."""
    async with asyncio.timeout(within):
        while True:
            document = await status(proxy)
            if ready(document):
                return document
            await asyncio.sleep(0.05)


def state_of(document: dict[str, Any], address: str) -> tuple[str, str] | None:
    upstream = upstream_at(document, address)
    return None if upstream is None else (upstream["name"], upstream["state"])


async def served_by(proxy: ProxyServer, route: str | None = None, path: str = "/test") -> str:
    cookie = f"Cookie: JSESSIONID=3F2504E04F8911D39A0C0305E82C3301-n1.{route}\r\n" if route else ""
    response = await exchange(proxy.port, get(path, cookie))
    assert response.status == 200, response.body
    server: str = json.loads(response.body)["server"]
    return server


async def wait_for(condition: Callable[[], bool], within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 - bounded by the timeout
            await asyncio.sleep(0.02)


# -- the user's journeys ---------------------------------------------------------------


async def test_a_localhost_name_resolved_by_getaddrinfo_reaches_its_app_server(
    apps: Apps,
) -> None:
    async with ProxyServer(dns_settings(f"dns:localhost:{apps.port}")) as proxy:
        address = f"127.0.0.1:{apps.port}"
        document = await until(proxy, lambda d: state_of(d, address) == ("app1", "up"))
        assert await served_by(proxy) == "app1"
    assert document["status"] == "ok"
    assert document["discovery"]["target"] == f"dns:localhost:{apps.port}"
    assert "127.0.0.1" in document["discovery"]["addresses"]
    assert document["discovery"]["problem"] is None


async def test_a_new_address_gets_traffic_only_after_its_health_check_passes(
    apps: Apps,
) -> None:
    zone = Addresses("127.0.0.1")
    newcomer = apps["127.0.0.2"]
    newcomer.healthy = False
    settings = dns_settings(f"dns:app.test:{apps.port}", policy="round_robin")
    async with ProxyServer(settings, resolver=zone.resolve) as proxy:
        await until(proxy, lambda d: state_of(d, f"127.0.0.1:{apps.port}") == ("app1", "up"))
        zone.hosts.append("127.0.0.2")
        address = f"127.0.0.2:{apps.port}"
        document = await until(proxy, lambda d: newcomer.health_checks >= 2)
        assert state_of(document, address) == (address, "checking")
        assert upstream_at(document, address)["reason"] == "checking: status 503"  # type: ignore[index]
        assert {await served_by(proxy) for _ in range(10)} == {"app1"}
        assert newcomer.hits == 0

        newcomer.healthy = True
        document = await until(proxy, lambda d: state_of(d, address) == ("app2", "up"))
        served = [await served_by(proxy) for _ in range(10)]
    assert served.count("app2") == 5  # smooth round robin over two equal peers
    changes = [(e["upstream"], e["change"]) for e in document["health_log"]]
    assert (address, "ADDED") in changes
    # It passes its check as its address, then takes the route it reported as its name.
    assert changes.index((address, "UP")) < changes.index(("app2", "ROUTE"))


async def test_an_address_whose_health_check_never_answers_stays_out(apps: Apps) -> None:
    zone = Addresses("127.0.0.1", "127.0.0.3")
    apps["127.0.0.3"].silent = True
    address = f"127.0.0.3:{apps.port}"
    settings = dns_settings(f"dns:app.test:{apps.port}", health_timeout=0.2, policy="round_robin")
    async with ProxyServer(settings, resolver=zone.resolve) as proxy:
        document = await until(
            proxy, lambda d: (upstream_at(d, address) or {}).get("reason") == "checking: timed out"
        )
        assert state_of(document, address) == (address, "checking")
        assert {await served_by(proxy) for _ in range(4)} == {"app1"}
    assert apps["127.0.0.3"].hits == 0


async def test_an_address_that_leaves_is_drained_then_removed(apps: Apps) -> None:
    zone = Addresses("127.0.0.1", "127.0.0.2")
    leaving = apps["127.0.0.2"]
    address = f"127.0.0.2:{apps.port}"
    async with ProxyServer(
        dns_settings(f"dns:app.test:{apps.port}"), resolver=zone.resolve
    ) as proxy:
        await until(
            proxy,
            lambda d: {u["state"] for u in d["upstreams"]} == {"up"} and len(d["upstreams"]) == 2,
        )
        # A request in flight on app2 when its address leaves DNS.
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        try:
            writer.write(get("/slow", "Cookie: JSESSIONID=AB-n1.app2\r\n"))
            await asyncio.wait_for(leaving.slow_started.wait(), 5)
            zone.hosts.remove("127.0.0.2")
            document = await until(proxy, lambda d: state_of(d, address) == ("app2", "draining"))
            assert upstream_at(document, address)["active"] == 1  # type: ignore[index]
            # No new requests, not even the ones whose session names app2.
            assert {await served_by(proxy, "app2") for _ in range(5)} == {"app1"}
            assert leaving.hits == 1
            leaving.gate.set()
            async with asyncio.timeout(5):
                response: Response = await read_response(reader)
        finally:
            writer.close()
        assert (response.status, json.loads(response.body)) == (200, {"server": "app2"})
        document = await until(proxy, lambda d: upstream_at(d, address) is None)
    changes = [(e["upstream"], e["change"]) for e in document["health_log"]]
    assert changes.index(("app2", "DRAINING")) < changes.index(("app2", "REMOVED"))
    assert [u["name"] for u in document["upstreams"]] == ["app1"]


async def test_sticky_routes_follow_the_route_each_address_reports(apps: Apps) -> None:
    zone = Addresses(*HOSTS)
    async with ProxyServer(
        dns_settings(f"dns:app.test:{apps.port}"), resolver=zone.resolve
    ) as proxy:
        document = await until(
            proxy,
            lambda d: (
                sorted((u["name"], u["state"]) for u in d["upstreams"])
                == [("app1", "up"), ("app2", "up"), ("app3", "up")]
            ),
        )
        served = {
            route: {await served_by(proxy, route) for _ in range(6)}
            for route in ("app1", "app2", "app3")
        }
        by_path = await exchange(proxy.port, get("/test;jsessionid=AB-n1.app3"))
    assert served == {"app1": {"app1"}, "app2": {"app2"}, "app3": {"app3"}}
    assert json.loads(by_path.body) == {"server": "app3"}
    assert {u["name"]: u["address"] for u in document["upstreams"]} == {
        f"app{i}": f"{host}:{apps.port}" for i, host in enumerate(HOSTS, 1)
    }


async def test_two_addresses_claiming_one_route_keep_the_newest(
    apps: Apps, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="proxy")
    zone = Addresses("127.0.0.1")
    apps["127.0.0.2"].route = "app1"  # a replacement started with the same route
    old, new = f"127.0.0.1:{apps.port}", f"127.0.0.2:{apps.port}"
    settings = dns_settings(f"dns:app.test:{apps.port}", policy="round_robin")
    async with ProxyServer(settings, resolver=zone.resolve) as proxy:
        await until(proxy, lambda d: state_of(d, old) == ("app1", "up"))
        zone.hosts.append("127.0.0.2")
        await until(
            proxy,
            lambda d: state_of(d, new) == ("app1", "up") and state_of(d, old) == (old, "conflict"),
        )
        hits_before = apps["127.0.0.1"].hits
        assert {await served_by(proxy) for _ in range(6)} == {"app1"}
        assert apps["127.0.0.1"].hits == hits_before  # the superseded one gets nothing
    conflicts = [
        r.getMessage() for r in caplog.records if "both report route app1" in r.getMessage()
    ]
    assert conflicts == [
        f"upstreams dns:app.test:{apps.port}: {old} and {new} both report route app1; "
        f"keeping the newest, {new}"
    ]


async def test_a_name_that_does_not_resolve_degrades_and_recovers(
    apps: Apps, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="proxy")
    zone = Addresses("127.0.0.1")
    zone.failing = True
    label = f"dns:app.test:{apps.port}"
    async with ProxyServer(dns_settings(label), resolver=zone.resolve) as proxy:
        await wait_for(lambda: len(zone.calls) >= 4)
        document = await status(proxy)
        assert document["status"] == "degraded"
        assert document["upstreams"] == []
        assert "does not resolve" in document["discovery"]["problem"]
        refused = await exchange(proxy.port, get("/test"))
        assert refused.status == 502 and b"no live upstreams" in refused.body

        zone.failing = False  # it resolves: back to ok
        document = await until(proxy, lambda d: d["status"] == "ok")
        assert await served_by(proxy) == "app1"

        zone.failing = True  # fails again: the last known set is kept and serves
        calls = len(zone.calls)
        await wait_for(lambda: len(zone.calls) >= calls + 3)
        document = await status(proxy)
        assert document["status"] == "degraded"
        assert state_of(document, f"127.0.0.1:{apps.port}") == ("app1", "up")
        assert await served_by(proxy) == "app1"

        zone.failing, zone.hosts = False, []  # resolves to nothing: still kept
        await until(
            proxy, lambda d: d["discovery"]["problem"] == "'app.test' resolves to no address"
        )
        assert await served_by(proxy) == "app1"
    lines = [
        r.getMessage() for r in caplog.records if r.getMessage().startswith(f"upstreams {label}")
    ]
    assert lines == [
        f"upstreams {label}: 'app.test' does not resolve (Name or service not known); "
        "no upstreams until it resolves (clients get 502)",
        f"upstreams {label} resolves again: 127.0.0.1",
        f"upstreams {label}: 'app.test' does not resolve (Name or service not known); "
        "keeping the 1 known address",
        f"upstreams {label}: 'app.test' resolves to no address; keeping the 1 known address",
    ]


async def test_a_real_name_that_does_not_exist_gives_502_and_a_degraded_status() -> None:
    # .invalid never resolves (RFC 2606); the real getaddrinfo, under its timeout.
    async with ProxyServer(dns_settings("dns:sessionha-nowhere.invalid:8000")) as proxy:
        document = await until(
            proxy,
            lambda d: d["discovery"]["problem"] is not None and d["discovery"]["failures"] > 0,
        )
        refused = await exchange(proxy.port, get("/test"))
        page = await exchange(proxy.port, get("/_proxy/status"))
        metrics = await exchange(proxy.port, get("/_proxy/metrics"))
    assert document["status"] == "degraded" and document["upstreams"] == []
    assert refused.status == 502
    assert page.status == 200 and b"status.json" in page.body
    assert b"sessionha_proxy_degraded 1" in metrics.body


async def test_the_name_is_resolved_again_every_resolver_valid_seconds(apps: Apps) -> None:
    zone = Addresses("127.0.0.1")
    loop = asyncio.get_running_loop()
    async with ProxyServer(
        dns_settings(f"dns:app.test:{apps.port}", resolver_valid=0.3), resolver=zone.resolve
    ):
        await wait_for(lambda: len(zone.calls) >= 4)
    gaps = [later - earlier for earlier, later in zip(zone.calls, zone.calls[1:], strict=False)]
    assert all(gap >= 0.3 for gap in gaps), gaps
    # A long resolver_valid: one resolution at start, none while the interval runs.
    slow = Addresses("127.0.0.1")
    settings = dns_settings(f"dns:app.test:{apps.port}", resolver_valid=60)
    async with ProxyServer(settings, resolver=slow.resolve) as proxy:
        await until(proxy, lambda d: state_of(d, f"127.0.0.1:{apps.port}") == ("app1", "up"))
        started = loop.time()
        await wait_for(lambda: loop.time() - started > 0.5)
    assert len(slow.calls) == 1


async def test_stopping_the_proxy_stops_resolving_and_checking(apps: Apps) -> None:
    zone = Addresses("127.0.0.1")
    async with ProxyServer(
        dns_settings(f"dns:app.test:{apps.port}"), resolver=zone.resolve
    ) as proxy:
        await until(proxy, lambda d: state_of(d, f"127.0.0.1:{apps.port}") == ("app1", "up"))
    calls, checks = len(zone.calls), apps["127.0.0.1"].health_checks
    await asyncio.sleep(0.5)
    assert (len(zone.calls), apps["127.0.0.1"].health_checks) == (calls, checks)


async def test_a_static_list_never_asks_dns(apps: Apps) -> None:
    zone = Addresses("127.0.0.1")
    settings = settings_from_mapping(
        {
            "listen": "127.0.0.1:0",
            "upstreams": f"app1=127.0.0.1:{apps.port}",
            "health_interval": 0.1,
        }
    )
    async with ProxyServer(settings, resolver=zone.resolve) as proxy:
        assert await served_by(proxy) == "app1"
        document = await status(proxy)
    assert zone.calls == []
    assert "discovery" not in document and "status" not in document
    assert [(u["name"], u["state"]) for u in document["upstreams"]] == [("app1", "up")]
