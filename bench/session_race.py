"""Benchmark: the same session page kept six ways, raced side by side in one run.

    .venv/bin/python bench/session_race.py [--duration 5] [--rounds 3] [--connections 50] [--pin]

Variants, each one server process (uvloop, no access log) on a free loopback port with its
own memcached process(es) on free loopback ports:
  bare             aiohttp handler, sessions in a dict in the process (the floor)
  bare-page        the same bare handler rendering the app server's own /test page (the
                   same DemoPage): the floor for `python -m appserver`, whose page is about
                   four times the size of the others'
  aiohttp-session  aiohttp-session's MemcachedStorage on aiomcache (pool of 4), one memcached
  adapter          the same aiohttp-session handler on sessionstore's MemcachedHAStorage
                   (sticky, backup to node n1): issue 14's drop-in
  sticky           sessionstore sticky: sessions in memory, backup to node n1
  non-sticky       sessionstore non-sticky: nodes n1 and n2, the bak: copy on the other node
  appserver        `python -m appserver` itself (sticky, one node, synchronous backup)
All but bare-page and appserver serve bench/session_race_server.py's page (the session id
and its attributes, escaped, and a form); the app server serves its own /test page.

Scenarios, each on sessions made before measuring that hold 5 attributes:
  GET   GET /test with one existing session (wrk -H "Cookie: JSESSIONID=..."): attributes read
  POST  POST /test `dataName=x&dataValue=y<n>` (a wrk Lua script) spread over 64 existing
        sessions: one attribute written, with a new value each time so that every POST really
        changes its session (a write of the same value may rightly store nothing)

Each round runs every scenario on every variant in turn (wrk -t1, a 1 s warm-up, then the
measured run); the rounds alternate so that other load on the machine falls on all variants
alike. Per run it prints requests/s, p99 latency, the server's CPU per request (utime + stime
of the server process from /proc over the measured run, divided by the requests wrk
completed) and the memcached commands per request (from the `stats` of the variant's own
memcached: get counts get/gets/mg, set every storage command incl. add and ms, touch
touch/gat, delete). Then the medians over the rounds and the ratios of the goal table
(issues 17 and 14), from the medians of this run (with the spread of the same ratio taken
round by round). wrk, the memcached processes and all the servers share the machine's CPUs
(with --pin: the servers one, wrk and memcached the other): ratios mean something only
within one run. Bounded: about rounds x 14 x (duration + 1.5) s plus a few seconds of
set-up (5 minutes by default). bench/session_instructions.py counts the same variants in
instructions, which do not move with the machine's load.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import sys
import tempfile
import urllib.parse
import urllib.request
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from appserver_bench import REPO, Result, fetch, free_port, process, wrk, wrk_post_script
from nginx_and_wrk import pin

SERVER = Path(__file__).resolve().with_name("session_race_server.py")
VARIANTS = (
    "bare", "bare-page", "aiohttp-session", "adapter", "sticky", "non-sticky", "appserver"
)
NODES = {
    "bare": 0,
    "bare-page": 0,
    "aiohttp-session": 1,
    "adapter": 1,
    "sticky": 1,
    "non-sticky": 2,
    "appserver": 1,
}
SCENARIOS = ("GET", "POST")
ATTRIBUTES = {"user": "alice", "cart": "3 items", "locale": "en-GB", "theme": "dark", "x": "y"}
POST_SESSIONS = 64
# memcached `stats` counters that are one command each (meta commands count as get/set too).
MEMCACHED_COMMANDS = {
    "cmd_get": "get",
    "cmd_set": "set",
    "cmd_touch": "touch",
    "delete_hits": "delete",
    "delete_misses": "delete",
}

# Sets the page's own "x" to a new value: the session keeps its 5 attributes and changes,
# so every POST is a backup.
POST_BODY = '"dataName=x&dataValue=y" .. n'


class Goal(NamedTuple):
    """One row of the goal table: `top`'s figure over `bottom`'s, same scenario."""

    label: str
    top: str
    bottom: str
    scenario: str
    measure: str  # "rps": higher is better; "cpu" (us per request): lower is better
    before: str  # the figure when the issue was filed
    goal: str


GOALS = (
    Goal(
        "adapter (sticky) GET req/s / aiohttp-session",
        "adapter",
        "aiohttp-session",
        "GET",
        "rps",
        "new",
        ">= 1.5x",
    ),
    Goal(
        "non-sticky GET req/s / aiohttp-session",
        "non-sticky",
        "aiohttp-session",
        "GET",
        "rps",
        "0.74x",
        ">= 1.5x",
    ),
    Goal(
        "non-sticky POST req/s / aiohttp-session",
        "non-sticky",
        "aiohttp-session",
        "POST",
        "rps",
        "1.14x",
        ">= 1.5x",
    ),
    Goal("sticky GET CPU/req / bare", "sticky", "bare", "GET", "cpu", "1.07-1.17x", "<= 1.05x"),
    Goal(
        "appserver GET /test CPU/req / bare-page (same page)",
        "appserver",
        "bare-page",
        "GET",
        "cpu",
        "1.22x",
        "<= 1.10x",
    ),
    Goal(
        "appserver POST /test (sync backup) CPU/req / bare-page",
        "appserver",
        "bare-page",
        "POST",
        "cpu",
        "1.37x",
        "<= 1.20x",
    ),
    # The same two over the small page's bare handler: page size and layers together.
    Goal("appserver GET /test CPU/req / bare", "appserver", "bare", "GET", "cpu", "", ""),
    Goal("appserver POST /test CPU/req / bare", "appserver", "bare", "POST", "cpu", "", ""),
)


@dataclass
class Variant:
    name: str
    port: int
    pid: int
    memcached_ports: list[int]
    memcached_pids: list[int]
    get_cookie: str = ""
    post_script: Path = Path()
    runs: dict[str, list[tuple[Result, Counter[str]]]] = field(
        default_factory=lambda: {scenario: [] for scenario in SCENARIOS}
    )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/test"


def memcached_args(port: int) -> list[str]:
    return ["memcached", "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "64", "-u", "nobody"]


def memcached_counts(ports: list[int]) -> Counter[str]:
    """The command counters of `stats`, summed over the given memcached processes."""
    counts: Counter[str] = Counter()
    for port in ports:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"stats\r\n")
            reply = b""
            while not reply.endswith(b"END\r\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    raise RuntimeError(f"memcached on port {port} closed during stats")
                reply += chunk
        for name, value in re.findall(rb"^STAT (\w+) (\d+)\r$", reply, re.MULTILINE):
            command = MEMCACHED_COMMANDS.get(name.decode())
            if command is not None:
                counts[command] += int(value)
    return counts


def post_form(url: str, cookie: str, name: str, value: str) -> tuple[bytes, str]:
    """POST one dataName/dataValue; (body, the session cookie now in force)."""
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if cookie:
        headers["Cookie"] = f"JSESSIONID={cookie}"
    data = urllib.parse.urlencode({"dataName": name, "dataValue": value}).encode()
    request = urllib.request.Request(url, data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=5) as response:
        match = re.search(r"JSESSIONID=([^;]+)", response.headers.get("Set-Cookie", ""))
        return response.read(), match[1] if match else cookie


def make_session(variant: Variant) -> str:
    """A session holding ATTRIBUTES, checked to be kept by the server under its cookie."""
    cookie = ""
    for name, value in ATTRIBUTES.items():
        _, cookie = post_form(variant.url, cookie, name, value)
    body, again = fetch(variant.url, cookie)
    text = body.decode()
    if again != cookie or cookie not in text or not all(v in text for v in ATTRIBUTES.values()):
        raise RuntimeError(f"{variant.name} did not keep the session {cookie!r}:\n{text}")
    return cookie


def start(stack: ExitStack, name: str) -> Variant:
    """The variant's memcached process(es) and server, stopped when `stack` closes."""
    memcached_ports = [free_port() for _ in range(NODES[name])]
    memcached_pids = [stack.enter_context(process(memcached_args(port), port))
                      for port in memcached_ports]
    port = free_port()
    addresses = ",".join(f"127.0.0.1:{p}" for p in memcached_ports)
    if name == "appserver":
        env = {
            "PATH": os.environ["PATH"],
            "LISTEN": f"127.0.0.1:{port}",
            "JVM_ROUTE": "app1",
            "MEMCACHED_NODES": f"n1:{addresses}",
            "ACCESS_LOG": "false",  # as every other variant: the race is the request's work
        }
        pid = stack.enter_context(process([sys.executable, "-m", "appserver"], port, env))
    else:
        pid = stack.enter_context(
            process([sys.executable, str(SERVER), name, str(port), addresses], port)
        )
    return Variant(name, port, pid, memcached_ports, memcached_pids)


def measure(variant: Variant, scenario: str, duration: int, connections: int,
            load_cpus: set[int] | None) -> None:
    """One warm-up and one measured wrk run; prints and keeps the figures."""
    before: list[Counter[str]] = []

    def snapshot() -> None:  # after the warm-up, right before the measured run
        before.append(memcached_counts(variant.memcached_ports))

    get = scenario == "GET"
    result = wrk(
        f"{variant.name} {scenario}",
        variant.url,
        variant.pid,
        duration=duration,
        connections=connections,
        cookie=variant.get_cookie if get else "",
        script=None if get else variant.post_script,
        before=snapshot,
        cpus=load_cpus,
    )
    commands = memcached_counts(variant.memcached_ports)
    commands.subtract(before[0])
    variant.runs[scenario].append((result, commands))
    per_request = " ".join(
        f"{name} {commands[name] / result.requests:.2f}"
        for name in ("get", "set", "touch", "delete")
    )
    print(
        f"  {variant.name:15} {result.requests_per_second:9.0f} req/s  "
        f"p99 {result.p99_ms:7.2f} ms  cpu {result.cpu_us_per_request:6.1f} us/req  "
        f"memcached/req: {per_request if variant.memcached_ports else '-'}",
        flush=True,
    )


def figure(variant: Variant, scenario: str, measure: str, run: int | None = None) -> float:
    """A variant's median (or one round's) requests/s or CPU us per request."""
    results = [result for result, _ in variant.runs[scenario]]
    values = [
        result.requests_per_second if measure == "rps" else result.cpu_us_per_request
        for result in results
    ]
    return values[run] if run is not None else statistics.median(values)


def report(variants: dict[str, Variant], rounds: int) -> None:
    bare = variants["bare"]
    peer = variants["aiohttp-session"]
    print("== medians")
    print(
        f"  {'variant':15} {'GET req/s':>10} {'us/req':>7} {'vs bare':>8} {'vs peer':>8}   "
        f"{'POST req/s':>10} {'us/req':>7} {'vs bare':>8} {'vs peer':>8}"
    )
    for variant in variants.values():
        cells = []
        for scenario in SCENARIOS:
            rps, cpu = figure(variant, scenario, "rps"), figure(variant, scenario, "cpu")
            cells.append(
                f"{rps:10.0f} {cpu:7.1f} {cpu / figure(bare, scenario, 'cpu'):7.2f}x "
                f"{rps / figure(peer, scenario, 'rps'):7.2f}x"
            )
        print(f"  {variant.name:15} {cells[0]}   {cells[1]}")
    print(
        "  (vs bare: CPU per request over the bare handler's; vs peer: requests/s over "
        "aiohttp-session's)"
    )
    print("== goals (ratio of this run's medians; spread of the per-round ratios)")
    print(f"  {'figure':56} {'now':>6} {'rounds':>13} {'before':>11} {'goal':>9}")
    for goal in GOALS:
        top, bottom = variants[goal.top], variants[goal.bottom]
        ratio = figure(top, goal.scenario, goal.measure) / figure(
            bottom, goal.scenario, goal.measure
        )
        per_round = [
            figure(top, goal.scenario, goal.measure, run)
            / figure(bottom, goal.scenario, goal.measure, run)
            for run in range(rounds)
        ]
        spread = f"{min(per_round):.2f}-{max(per_round):.2f}x"
        print(f"  {goal.label:56} {ratio:5.2f}x {spread:>13} {goal.before:>11} {goal.goal:>9}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per measured run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--pin", action="store_true",
                        help="servers on the first CPU, wrk and memcached on the second")
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    if args.pin and len(cpus) < 2:
        parser.error("--pin needs two CPUs")
    for tool in ("wrk", "memcached"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (scripts/install installs it)", file=sys.stderr)
            return 1
    if args.rounds < 1 or args.duration < 1 or args.connections < 1:
        parser.error("--rounds, --duration and --connections must be at least 1")
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="session-race-")))
        variants = {name: start(stack, name) for name in VARIANTS}
        for variant in variants.values():
            variant.get_cookie = make_session(variant)
            cookies = [make_session(variant) for _ in range(POST_SESSIONS)]
            variant.post_script = scratch / f"post-{variant.name}.lua"
            variant.post_script.write_text(wrk_post_script(cookies, POST_BODY))
        load_cpus = None
        if args.pin:
            load_cpus = {cpus[1]}
            for variant in variants.values():
                pin(variant.pid, {cpus[0]})
                for memcached_pid in variant.memcached_pids:
                    pin(memcached_pid, load_cpus)
        where = (f"servers on CPU {cpus[0]}, wrk and memcached on CPU {cpus[1]}" if args.pin
                 else f"{len(cpus)} CPUs shared with wrk and memcached")
        print(
            f"wrk -t1 -c{args.connections} -d{args.duration}s, {args.rounds} rounds alternating; "
            f"one server process each (uvloop); {where}; repository {REPO}"
        )
        for round_number in range(1, args.rounds + 1):
            for scenario in SCENARIOS:
                what = (
                    "existing session, 5 attributes read"
                    if scenario == "GET"
                    else f"one attribute written, {POST_SESSIONS} sessions"
                )
                print(f"== round {round_number} {scenario} /test ({what})", flush=True)
                for variant in variants.values():
                    measure(variant, scenario, args.duration, args.connections, load_cpus)
        report(variants, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
