"""GET /health and GET /metrics, with nodes alive and dead."""

from __future__ import annotations

from collections.abc import Callable

from tests.support.memcached import MemcachedProcess

from .apps import AppClient


async def test_health_reports_route_nodes_and_sessions(
    app_client: AppClient, memcached_factory: Callable[..., MemcachedProcess]
) -> None:
    n1, n2 = memcached_factory(), memcached_factory()
    client = await app_client(n1, n2, failover_nodes="n1")
    await client.get("/test")
    response = await client.get("/health")
    assert response.status == 200 and "Set-Cookie" not in response.headers
    body = await response.json()
    assert body["status"] == "ok" and body["route"] == "app1"
    assert body["address"] == f"127.0.0.1:{client.port}"
    assert body["sessions_in_memory"] == 1
    assert [(n["id"], n["port"], n["alive"], n["failover"]) for n in body["nodes"]] == [
        ("n1", n1.port, True, True),
        ("n2", n2.port, True, False),
    ]


async def test_health_is_degraded_but_200_when_every_node_is_dead(
    app_client: AppClient, memcached: MemcachedProcess
) -> None:
    client = await app_client(memcached, operation_timeout=0.2)
    await client.post("/test", data={"dataName": "a", "dataValue": "1"})
    memcached.kill()
    # the next backup fails against the dead node, which marks it dead; the page still works
    response = await client.post("/test", data={"dataName": "b", "dataValue": "2"})
    assert response.status == 200
    health = await client.get("/health")
    assert health.status == 200
    body = await health.json()
    assert body["status"] == "degraded" and body["nodes"][0]["alive"] is False


async def test_metrics_are_prometheus_text_with_request_counts(app_client: AppClient) -> None:
    client = await app_client()
    await client.get("/test")
    await client.post("/test", data={"dataName": "a", "dataValue": "1"})
    await client.get("/nowhere")
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    text = await response.text()
    for sample in (
        'sessionha_appserver_http_requests_total{method="GET",status="200"} 1.0',
        'sessionha_appserver_http_requests_total{method="POST",status="200"} 1.0',
        'sessionha_appserver_http_requests_total{method="GET",status="404"} 1.0',
        "sessionha_appserver_sessions_in_memory 1.0",
        'sessionha_sessionstore_node_up{node="n1"} 1.0',
        "sessionha_sessionstore_sessions_created_total 1.0",
        "sessionha_sessionstore_backups_written_total",
        'sessionha_sessionstore_backup_latency_seconds_bucket{le="+Inf"} 1.0',
    ):
        assert sample in text, sample
