"""What the proxy shows of itself: the live status stream, the cluster view built from
the app servers' /health reports, Prometheus metrics, and the access log."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from proxy.status_stream import MAX_SUBSCRIBERS
from tests.proxy.support import RawUpstream, exchange, get, running_proxy, settings
from tests.support.ports import free_port

REPO = Path(__file__).resolve().parents[2]

KINDS = {"upstream_down", "upstream_up", "node_dead", "node_alive", "takeover", "relocation"}


def health_report(*, n2_alive: bool, taken: int) -> bytes:
    body = json.dumps(
        {
            "status": "ok",
            "route": "app2",
            "sessions_in_memory": 7,
            "sessions_taken_over": taken,
            "taken_over_from": {"app1": taken},
            "sessions_relocated": 0,
            "relocations": {},
            "backups_failed": 0,
            "nodes": [
                {"id": "n1", "host": "127.0.0.1", "port": 1, "alive": True, "failover": True},
                {"id": "n2", "host": "127.0.0.1", "port": 2, "alive": n2_alive, "failover": False},
            ],
        }
    ).encode()
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )


async def next_event(reader: asyncio.StreamReader) -> dict[str, Any]:
    line = await asyncio.wait_for(reader.readuntil(b"\n\n"), 3)
    assert line.startswith(b"data: ")
    document: dict[str, Any] = json.loads(line[6:])
    return document


async def test_the_live_stream_pushes_the_cluster_as_the_app_servers_report_it() -> None:
    app = await RawUpstream("app2", response=health_report(n2_alive=True, taken=0)).start()
    try:
        proxy_settings = settings({"app2": app.port}, health_interval=0.2)
        async with running_proxy(proxy_settings) as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(get("/_proxy/status/events"))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
            assert head.startswith(b"HTTP/1.1 200 OK\r\n")
            assert b"Content-Type: text/event-stream\r\n" in head
            document = await next_event(reader)  # at once, then once a second
            assert {"upstreams", "cluster", "events", "health_log"} <= set(document)
            await asyncio.sleep(0.5)
            app.response = health_report(n2_alive=False, taken=37)
            for _ in range(4):
                document = await next_event(reader)
                if any(e["kind"] == "takeover" for e in document["events"]):
                    break
            writer.close()
    finally:
        await app.stop()
    events = document["events"]
    assert {e["kind"] for e in events} <= KINDS and all(
        set(e) == {"time", "kind", "text"} for e in events
    )
    texts = [e["text"] for e in events]
    assert "n2 marked dead by app2" in texts and "app2 took over 37 sessions from app1" in texts
    (server,) = document["cluster"]["appservers"]
    assert (server["name"], server["route"], server["sessions_in_memory"]) == ("app2", "app2", 7)
    assert server["sessions_taken_over"] == 37
    n1, n2 = document["cluster"]["memcached"]
    # n2 is dead for app2, so it backs up to its failover node n1.
    assert (n1["id"], n1["alive"], n1["backed_up_by"]) == ("n1", True, ["app2"])
    assert (n2["id"], n2["alive"], n2["seen_by"]) == ("n2", False, {"app2": False})


async def test_a_head_request_for_the_stream_gets_its_head_and_the_connection_closes() -> None:
    app = await RawUpstream("ok").start()
    try:
        async with running_proxy(settings({"app1": app.port})) as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(b"HEAD /_proxy/status/events HTTP/1.1\r\nHost: h\r\n\r\n")
            rest = await asyncio.wait_for(reader.read(), 3)
            writer.close()
    finally:
        await app.stop()
    assert rest.startswith(b"HTTP/1.1 200 OK\r\n") and rest.endswith(b"\r\n\r\n")


async def test_metrics_parse_with_prometheus_names_and_types() -> None:
    app = await RawUpstream("ok").start()
    try:
        async with running_proxy(settings({"app1": app.port})) as proxy:
            for _ in range(3):
                assert (await exchange(proxy.port, get("/"))).status == 200
            text = (await exchange(proxy.port, get("/_proxy/metrics"))).body.decode()
    finally:
        await app.stop()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert all(name.startswith(("sessionha_", "process_")) for name in families), families
    types = {name: family.type for name, family in families.items()}
    assert types["sessionha_proxy_upstream_response_seconds"] == "histogram"
    assert types["sessionha_proxy_upstream_responses"] == "counter"
    assert types["sessionha_proxy_connections_active"] == "gauge"
    assert types["sessionha_build_info"] == "gauge"
    assert "process_cpu_seconds" in families
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in families.values()
        for sample in family.samples
    }
    app1 = (("upstream", "app1"),)
    assert samples[("sessionha_proxy_upstream_responses_total", (("code", "2xx"), *app1))] == 3
    assert samples[("sessionha_proxy_upstream_response_seconds_count", app1)] == 3
    assert samples[("sessionha_proxy_upstream_response_seconds_bucket", (("le", "+Inf"), *app1))]
    assert samples[("sessionha_proxy_upstream_sent_bytes_total", app1)] > 0
    assert samples[("sessionha_proxy_upstream_received_bytes_total", app1)] > 0
    assert samples[("sessionha_proxy_connections_accepted_total", ())] == 4


COMBINED = re.compile(
    r'(?P<addr>\S+) - - \[[^\]]+\] "(?P<request>[^"]*)" (?P<status>\d{3}) (?P<bytes>\d+) '
    r'"(?P<referer>[^"]*)" "(?P<agent>[^"]*)" (?P<rid>\S+) (?P<urt>\S+)'
)


async def test_the_access_log_writes_combined_lines_with_the_request_id(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    app = await RawUpstream("ok").start()
    try:
        proxy_settings = settings({"app1": app.port, "gone": 1}, access_log=str(log))
        async with running_proxy(proxy_settings) as proxy:
            lean = await exchange(
                proxy.port,
                get("/page?x=1", 'Referer: http://ref.test/\r\nUser-Agent: curl "8"\r\n'),
            )
            post = await exchange(
                proxy.port, b"POST /form HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx"
            )
    finally:
        await app.stop()
    lines = log.read_text().splitlines()
    assert len(lines) == 2, lines
    first, second = (COMBINED.fullmatch(line) for line in lines)
    assert first is not None and second is not None, lines
    assert first["request"] == "GET /page?x=1 HTTP/1.1" and first["status"] == "200"
    assert first["referer"] == "http://ref.test/" and first["agent"] == r"curl \x228\x22"
    assert first["rid"] == lean.request_id.decode() and float(first["urt"]) >= 0
    assert second["request"] == "POST /form HTTP/1.1" and second["rid"] == post.request_id.decode()
    assert first["addr"] == "127.0.0.1"


async def test_log_format_json_writes_one_object_per_line(tmp_path: Path) -> None:
    log = tmp_path / "access.json"
    app = await RawUpstream("ok").start()
    try:
        proxy_settings = settings({"app1": app.port}, access_log=str(log), log_format="json")
        async with running_proxy(proxy_settings) as proxy:
            answer = await exchange(proxy.port, get("/j"))
    finally:
        await app.stop()
    (record,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert record["request"] == "GET /j HTTP/1.1" and record["status"] == 200
    assert record["request_id"] == answer.request_id.decode()


async def test_a_proxy_process_with_log_format_json_logs_only_json_lines(tmp_path: Path) -> None:
    app = await RawUpstream("ok").start()
    port = free_port()
    stdout, stderr = tmp_path / "out", tmp_path / "err"
    env = {
        "PATH": os.environ["PATH"],
        "LISTEN": f"127.0.0.1:{port}",
        "UPSTREAMS": f"app1=127.0.0.1:{app.port},gone=127.0.0.1:1",
        "HEALTH_INTERVAL": "0.2",
        "ACCESS_LOG": "stdout",
        "LOG_FORMAT": "json",
    }
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(  # noqa: ASYNC220 (started once; the loop waits on it below)
            [sys.executable, "-m", "proxy"], cwd=REPO, env=env, stdout=out, stderr=err
        )
    try:
        for _ in range(100):
            if b"proxy listening" in stderr.read_bytes():
                break
            await asyncio.sleep(0.05)
        answer = await exchange(port, get("/x"))
        await asyncio.sleep(0.5)  # the down upstream's event lines, the log's flush
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
        await app.stop()
    access = [json.loads(line) for line in stdout.read_text().splitlines()]
    events = [json.loads(line) for line in stderr.read_text().splitlines()]
    assert [record["request_id"] for record in access] == [answer.request_id.decode()]
    assert any("proxy listening" in record["message"] for record in events)
    assert all({"time", "level", "logger", "message"} <= set(record) for record in events)


async def test_the_stream_serves_a_bounded_number_of_pages_and_says_so_beyond() -> None:
    app = await RawUpstream("ok").start()
    opened: list[asyncio.StreamWriter] = []
    try:
        async with running_proxy(settings({"app1": app.port})) as proxy:
            for _ in range(MAX_SUBSCRIBERS):
                reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
                opened.append(writer)
                writer.write(get("/_proxy/status/events"))
                await next_event_after_head(reader)
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(get("/_proxy/status/events"))
            refused = await asyncio.wait_for(reader.read(), 3)
            writer.close()
            # A page closed makes room for another.
            opened.pop().close()
            await asyncio.sleep(0.1)
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            opened.append(writer)
            writer.write(get("/_proxy/status/events"))
            await next_event_after_head(reader)
            for writer in opened:
                writer.close()
    finally:
        await app.stop()
    assert refused.startswith(b"HTTP/1.1 503 ") and b"too many status pages open" in refused


async def next_event_after_head(reader: asyncio.StreamReader) -> dict[str, Any]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n"), head
    return await next_event(reader)
