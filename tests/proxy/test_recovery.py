"""Recovery after a restart: an upstream out for passive failures takes traffic again as
soon as the active checker sees it healthy, not only when fail_timeout ends."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.proxy.support import RawUpstream, exchange, get, running_proxy, settings


async def status_of(port: int) -> dict[str, Any]:
    response = await exchange(port, get("/_proxy/status.json"))
    result: dict[str, Any] = json.loads(response.body)
    return result


async def wait_for(port: int, name: str, state: str) -> None:
    for _ in range(100):
        upstreams = {u["name"]: u for u in (await status_of(port))["upstreams"]}
        if upstreams[name]["state"] == state:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name} never became {state}")


async def test_restarted_upstream_takes_over_before_fail_timeout_ends() -> None:
    one = await RawUpstream("one").start()
    two = await RawUpstream("two").start()
    one_port = one.port
    # Only passive failures can take an upstream out here (fall is out of reach), and
    # fail_timeout outlasts the test: the active checker alone must bring it back.
    proxy_settings = settings(
        {"app1": one_port, "app2": two.port},
        max_fails=1,
        fail_timeout=60,
        health_interval=0.05,
        health_timeout=0.5,
        fall=1000,
        rise=2,
    )
    try:
        async with running_proxy(proxy_settings) as proxy:
            await one.stop()
            for _ in range(2):  # one of these reaches app1 and is retried on app2
                response = await exchange(proxy.port, get())
                assert (response.status, response.body) == (200, b"tw")
            await wait_for(proxy.port, "app1", "down")
            await one.start(one_port)
            await wait_for(proxy.port, "app1", "up")
            await two.stop()
            bodies = []
            for _ in range(3):
                response = await exchange(proxy.port, get())
                bodies.append((response.status, response.body))
            status = await status_of(proxy.port)
    finally:
        await one.stop()
        await two.stop()
    assert bodies == [(200, b"on")] * 3
    texts = [event["text"] for event in status["health_log"] if event["upstream"] == "app1"]
    assert texts[0].startswith("app1 DOWN ") and texts[0].endswith("connection refused")
    assert texts[1].startswith("app1 UP ") and texts[1].endswith("2 health checks passed")


async def test_lone_upstream_out_for_passive_failures_is_still_tried() -> None:
    one = await RawUpstream("one").start()
    one_port = one.port
    proxy_settings = settings({"app1": one_port}, max_fails=1, fail_timeout=60)
    try:
        async with running_proxy(proxy_settings) as proxy:
            await one.stop()
            refused = await exchange(proxy.port, get())
            await one.start(one_port)
            response = await exchange(proxy.port, get())
    finally:
        await one.stop()
    assert refused.status == 502 and b"connection refused" in refused.body
    assert (response.status, response.body) == (200, b"on")
