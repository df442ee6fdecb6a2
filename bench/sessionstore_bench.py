"""Benchmark: what the session manager costs per request, against the same bare handler.

Starts its own memcached on a free loopback port, serves one aiohttp app per scenario in
this process (uvloop, no access log) and drives it with wrk (one session per connection).
Server CPU per request is this process's CPU time over the requests it answered; memcached
and wrk run in other processes. Every figure and ratio is measured in this run. Bounded:
about rounds x 6 x (duration + 1) seconds (36 s by default).

    .venv/bin/python bench/sessionstore_bench.py [--duration 2] [--rounds 2] [--connections 2]

Scenarios (all with an existing session, as in steady traffic):
  bare              the handler alone, no session manager installed
  sticky unchanged  reads an attribute; no memcached round trip (expiry refresh is rare)
  sticky changed    changes an attribute; backup written before the response
  sticky async      changes an attribute; backup written after the response
  non-sticky        changes an attribute; load + primary and bak: copies every request
  non-sticky+lock   the same under locking_mode=all (add lock, load, 2 sets, delete lock)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from aiohttp import ClientSession, web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sessionstore
from sessionstore import SessionStoreSettings, get_session

WRK_SCRIPT = """
local threads = 0
local ids = {%s}
function setup(thread)
  threads = threads + 1
  thread:set("sid", ids[threads])
end
function init(args)
  if sid ~= nil then wrk.headers["Cookie"] = "JSESSIONID=" .. sid end
end
"""


@dataclass(frozen=True)
class Scenario:
    name: str
    settings: dict[str, object] | None  # None: no session manager at all
    change: bool


SCENARIOS = (
    Scenario("bare", None, change=False),
    Scenario("sticky unchanged", {}, change=False),
    Scenario("sticky changed", {}, change=True),
    Scenario("sticky async", {"session_backup_async": True}, change=True),
    Scenario("non-sticky", {"sticky": False}, change=True),
    Scenario("non-sticky+lock", {"sticky": False, "locking_mode": "all"}, change=True),
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def memcached() -> Iterator[int]:
    binary = shutil.which("memcached")
    if binary is None:
        sys.exit("memcached is not installed (apt-get install memcached)")
    port = free_port()
    process = subprocess.Popen(
        [binary, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "64", "-u", "nobody"]
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        yield port
    finally:
        process.kill()
        process.wait(timeout=10)


def build_app(scenario: Scenario, memcached_port: int, counter: list[int]) -> web.Application:
    app = web.Application()
    if scenario.settings is None:

        async def bare(request: web.Request) -> web.Response:
            counter[0] += 1
            return web.Response(text="count=1")

        app.router.add_get("/", bare)
        return app
    settings = SessionStoreSettings.from_mapping(
        {
            "jvm_route": "app1",
            "memcached_nodes": f"n1:127.0.0.1:{memcached_port}",
            **scenario.settings,
        }
    )
    sessionstore.setup(app, settings)
    change = scenario.change

    async def handler(request: web.Request) -> web.Response:
        counter[0] += 1
        session = await get_session(request)
        count = session.get("count", 0)
        if change:
            assert isinstance(count, int)
            count += 1
            session["count"] = count
        return web.Response(text=f"count={count}")

    app.router.add_get("/", handler)
    return app


async def run_scenario(
    scenario: Scenario, memcached_port: int, duration: int, connections: int
) -> tuple[float, float, int]:
    counter = [0]
    runner = web.AppRunner(build_app(scenario, memcached_port, counter), access_log=None)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        ids: list[str] = []
        if scenario.settings is not None:
            for _ in range(connections):  # one existing session per connection
                async with (
                    ClientSession() as client,
                    client.get(f"http://127.0.0.1:{port}/") as response,
                ):
                    ids.append(response.cookies["JSESSIONID"].value)
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
            script.write(WRK_SCRIPT % ", ".join(f'"{i}"' for i in ids))
        url = f"http://127.0.0.1:{port}/"
        await run_wrk(connections, 1, script.name, url)  # warm-up, not counted
        counter[0] = 0
        cpu_before = time.process_time()
        output = await run_wrk(connections, duration, script.name, url)
        cpu = time.process_time() - cpu_before
        requests = counter[0]
        match = re.search(r"Requests/sec:\s+([\d.]+)", output)
        rps = float(match.group(1)) if match else requests / duration
        errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
        if errors:
            print(f"  warning: {scenario.name}: {errors.group(1)} error responses", file=sys.stderr)
        if requests == 0:
            raise RuntimeError(f"wrk sent no requests: {output}")
        return cpu / max(1, requests) * 1e6, rps, requests
    finally:
        await runner.cleanup()
        Path(script.name).unlink(missing_ok=True)  # noqa: ASYNC240 - tiny local file


async def run_wrk(connections: int, duration: int, script: str, url: str) -> str:
    """wrk with one thread per connection; its report."""
    wrk = await asyncio.create_subprocess_exec(
        "wrk", "-t", str(connections), "-c", str(connections), "-d", f"{duration}s",
        "-s", script, url, stdout=asyncio.subprocess.PIPE,
    )
    output, _ = await asyncio.wait_for(wrk.communicate(), duration + 30)
    return output.decode()


async def main(duration: int, connections: int, rounds: int) -> None:
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    with memcached() as port:
        best: dict[str, tuple[float, float, int]] = {}
        for _ in range(rounds):  # interleaved rounds; the least disturbed one counts
            for scenario in SCENARIOS:
                result = await run_scenario(scenario, port, duration, connections)
                if scenario.name not in best or result[0] < best[scenario.name][0]:
                    best[scenario.name] = result
        results = [(s.name, *best[s.name]) for s in SCENARIOS]
        base_us = results[0][1]
        print(
            f"sessionstore per-request cost, {connections} connections x {duration}s x "
            f"{rounds} rounds (best), memcached on loopback, server CPU in this process"
        )
        print(f"{'scenario':<18} {'CPU us/req':>11} {'ratio':>7} {'req/s':>9} {'requests':>9}")
        for name, us, rps, count in results:
            print(f"{name:<18} {us:>11.1f} {us / base_us:>6.2f}x {rps:>9.0f} {count:>9}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=2, help="seconds per scenario run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=2)
    args = parser.parse_args()
    # A backup slower than session_backup_timeout under full load is logged; keep the table clean.
    logging.getLogger("sessionstore").setLevel(logging.ERROR)
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        runner.run(main(args.duration, args.connections, args.rounds))
