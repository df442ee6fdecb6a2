"""Failover figures: how long a user waits when the app server holding its session dies.

One client sends GET /test (JSON) on one session at a fixed rate, open loop (a request
leaves on schedule whether or not the previous one has answered). After a steady period
the app serving it is SIGKILLed through the launcher; the script prints the time from the
kill to the first successful answer from the survivor, how many requests failed, and the
latency of that first answer (the survivor loads the session from memcached) against the
steady-state median. Each run restarts the killed app, then repeats on a new session.

    .venv/bin/python bench/failover.py                 # own cluster on free ports, sticky
    .venv/bin/python bench/failover.py --non-sticky --runs 5 --rate 100

It starts its own cluster with `python -m cluster up` on free loopback ports and stops it
at the end, so nothing else needs to be running.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from cluster.control import request as control
from cluster.errors import ControlError
from cluster.status import MemberStatus

REQUEST_TIMEOUT = 5.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def topology(sticky: bool) -> tuple[str, int]:
    n1, n2, app1, app2, proxy = (free_port() for _ in range(5))
    failover = ('failover_nodes = "n1"', 'failover_nodes = "n2"') if sticky else ("", "")
    toml = f"""
[memcached.n1]
listen = "127.0.0.1:{n1}"
[memcached.n2]
listen = "127.0.0.1:{n2}"
[appserver]
memcached_nodes = "n1:127.0.0.1:{n1},n2:127.0.0.1:{n2}"
sticky = {str(sticky).lower()}
[appserver.app1]
listen = "127.0.0.1:{app1}"
jvm_route = "app1"
{failover[0]}
[appserver.app2]
listen = "127.0.0.1:{app2}"
jvm_route = "app2"
{failover[1]}
[proxy.proxy]
listen = "127.0.0.1:{proxy}"
upstreams = "app1=127.0.0.1:{app1},app2=127.0.0.1:{app2}"
policy = "{"sticky" if sticky else "round_robin"}"
"""
    return toml, proxy


@dataclass
class Sample:
    sent: float
    done: float
    server: str | None  # None: the request failed

    @property
    def latency(self) -> float:
        return self.done - self.sent


async def one_request(http: aiohttp.ClientSession, url: str, cookie: str) -> str | None:
    try:
        async with http.get(
            url, headers={"Accept": "application/json", "Cookie": f"JSESSIONID={cookie}"}
        ) as response:
            if response.status != 200:
                return None
            view = await response.json()
            return str(view["server"])
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError):
        return None


async def new_session(http: aiohttp.ClientSession, base: str) -> tuple[str, str]:
    """A session with a few entries; returns (session id, serving app)."""
    cookie = ""
    server = ""
    for i in range(3):
        async with http.post(
            f"{base}/test",
            data={"dataName": f"k{i}", "dataValue": "v"},
            headers={
                "Accept": "application/json",
                **({"Cookie": f"JSESSIONID={cookie}"} if cookie else {}),
            },
        ) as response:
            response.raise_for_status()
            view = await response.json()
            cookie, server = view["session_id"], view["server"]
    return cookie, server


async def proxy_sees_up(http: aiohttp.ClientSession, base: str, name: str) -> None:
    """Wait until the proxy's health checks have taken the restarted app back."""
    for _ in range(300):  # 30 s at most
        async with http.get(f"{base}/_proxy/status.json") as response:
            status = await response.json()
        if any(u["name"] == name and u["up"] for u in status["upstreams"]):
            return
        await asyncio.sleep(0.1)
    raise SystemExit(f"the proxy did not take {name} back within 30 s")


async def one_run(
    http: aiohttp.ClientSession,
    base: str,
    socket_path: Path,
    *,
    rate: float,
    steady: float,
    after: float,
) -> dict[str, float | int | str]:
    cookie, victim = await new_session(http, base)
    samples: list[Sample] = []
    tasks: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()
    start = loop.time()
    killed_at: float | None = None

    async def timed(sent: float) -> None:
        server = await one_request(http, f"{base}/test", cookie)
        samples.append(Sample(sent, loop.time(), server))

    kill_task: asyncio.Task[list[MemberStatus]] | None = None
    for i in range(int((steady + after) * rate)):
        await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
        if killed_at is None and loop.time() - start >= steady:
            killed_at = loop.time()
            kill_task = asyncio.create_task(
                asyncio.to_thread(
                    control, socket_path, {"command": "kill", "member": victim}, timeout=10
                )
            )
        task = asyncio.create_task(timed(loop.time()))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    assert kill_task is not None and killed_at is not None
    await kill_task
    steady_latencies = [s.latency for s in samples if s.done < killed_at and s.server]
    after_kill = sorted((s for s in samples if s.done >= killed_at), key=lambda s: s.done)
    survivor = next((s for s in after_kill if s.server not in (None, victim)), None)
    if survivor is None:
        raise SystemExit(f"no request succeeded on the survivor within {after:g} s of the kill")
    failed = sum(1 for s in samples if s.server is None)
    await asyncio.to_thread(
        control, socket_path, {"command": "start", "member": victim}, timeout=60
    )
    await proxy_sees_up(http, base, victim)
    return {
        "victim": victim,
        "survivor": str(survivor.server),
        "kill_to_first_success_ms": (survivor.done - killed_at) * 1000,
        "failed_requests": failed,
        "first_answer_ms": survivor.latency * 1000,
        "steady_median_ms": statistics.median(steady_latencies) * 1000,
        "requests": len(samples),
    }


def start_cluster(workdir: Path, toml: str) -> tuple[subprocess.Popen[bytes], Path]:
    config, run_dir = workdir / "cluster.toml", workdir / "run"
    config.write_text(toml)
    log = (workdir / "launcher.log").open("wb")
    launcher = subprocess.Popen(
        [sys.executable, "-m", "cluster", "up", "--config", str(config), "--run-dir", str(run_dir)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    socket_path = run_dir / "control.sock"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if launcher.poll() is not None:
            raise SystemExit(f"the launcher exited: {(workdir / 'launcher.log').read_text()}")
        with contextlib.suppress(ControlError):
            if all(
                m.state == "running" for m in control(socket_path, {"command": "status"}, timeout=5)
            ):
                return launcher, socket_path
        time.sleep(0.1)
    launcher.kill()
    raise SystemExit("the cluster did not come up within 60 s")


async def bench(args: argparse.Namespace) -> None:
    toml, proxy_port = topology(sticky=not args.non_sticky)
    with tempfile.TemporaryDirectory(prefix="sha-bench-") as workdir:
        launcher, socket_path = start_cluster(Path(workdir), toml)
        try:
            base = f"http://127.0.0.1:{proxy_port}"
            timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
            async with aiohttp.ClientSession(
                timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()
            ) as http:
                results = []
                mode = "non-sticky, round robin" if args.non_sticky else "sticky"
                print(
                    f"failover bench: {mode}, {args.rate:g} requests/s, kill after "
                    f"{args.steady:g} s, {args.runs} runs"
                )
                print(
                    f"{'run':>3} {'killed':>6} {'kill->ok ms':>11} {'failed':>6} "
                    f"{'first ms':>9} {'median ms':>9} {'ratio':>6}"
                )
                for run in range(1, args.runs + 1):
                    result = await one_run(
                        http,
                        base,
                        socket_path,
                        rate=args.rate,
                        steady=args.steady,
                        after=args.after,
                    )
                    results.append(result)
                    ratio = float(result["first_answer_ms"]) / float(result["steady_median_ms"])
                    print(
                        f"{run:>3} {result['victim']:>6} "
                        f"{result['kill_to_first_success_ms']:>11.1f} "
                        f"{result['failed_requests']:>6} {result['first_answer_ms']:>9.2f} "
                        f"{result['steady_median_ms']:>9.2f} {ratio:>6.1f}"
                    )

                def median(key: str) -> float:
                    return statistics.median(float(r[key]) for r in results)

                print(
                    f"median over {len(results)} runs: kill->first success "
                    f"{median('kill_to_first_success_ms'):.1f} ms, failed requests "
                    f"{median('failed_requests'):g}, first answer "
                    f"{median('first_answer_ms'):.2f} ms vs steady median "
                    f"{median('steady_median_ms'):.2f} ms "
                    f"({median('first_answer_ms') / median('steady_median_ms'):.1f}x)"
                )
        finally:
            launcher.send_signal(signal.SIGTERM)
            try:
                launcher.wait(timeout=20)
            except subprocess.TimeoutExpired:
                launcher.kill()
                launcher.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second")
    parser.add_argument("--steady", type=float, default=3.0, help="seconds before the kill")
    parser.add_argument("--after", type=float, default=3.0, help="seconds after the kill")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--non-sticky",
        action="store_true",
        help="sticky = false on the apps, round robin on the proxy",
    )
    args = parser.parse_args()
    if args.rate <= 0 or args.runs <= 0 or args.steady <= 0 or args.after <= 0:
        parser.error("--rate, --runs, --steady and --after must be positive")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    asyncio.run(bench(args))


if __name__ == "__main__":
    main()
