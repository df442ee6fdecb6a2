"""Benchmark: the user-space instructions of one request, session_race's variants side by side.

    .venv/bin/python bench/session_instructions.py [--requests 1000] [--variants a,b,...]

The same variants as bench/session_race.py (the same servers, memcached processes of their
own on free loopback ports), each run twice under valgrind's callgrind: once for N requests
and once for 2N, after the same start-up, session set-up and warm-up. The difference of the
two totals over N is the cost of one request, start-up and shutdown cancelled out, counted
in instructions: the same figure on every run on any machine, where CPU time on a shared
machine moves by half between two runs of one handler. What it leaves out, and
session_race.py's CPU figures keep: time in the kernel (system calls), cache misses, and
the batching of memcached commands that concurrent requests allow (here requests come one
at a time, over 10 keep-alive connections in turn).

Scenarios as in session_race.py: GET /test with one session of 5 attributes; POST /test
setting one of them to a new value each time. Prints instructions per request and the
CPU goals of issue 17 as instruction ratios. Needs valgrind. The runs go as many at once as
there are CPUs; about 10 minutes on 2 at the default N (callgrind runs Python some 50 times
slower).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from appserver_bench import REPO, free_port, wait_for_port
from session_race import ATTRIBUTES, NODES, SERVER, VARIANTS, memcached_args

SCENARIOS = ("GET", "POST")
CONNECTIONS = 10
STARTUP_TIMEOUT = 120.0  # a server under callgrind takes some 20 s to import and listen
REPLY_TIMEOUT = 60.0


class Ratio(NamedTuple):
    label: str
    top: str
    bottom: str
    scenario: str
    goal: str


RATIOS = (
    Ratio("sticky GET / bare", "sticky", "bare", "GET", "<= 1.05x"),
    Ratio("appserver GET /test / bare-page (same page)", "appserver", "bare-page", "GET",
          "<= 1.10x"),
    Ratio("appserver POST /test (sync backup) / bare-page", "appserver", "bare-page", "POST",
          "<= 1.20x"),
    Ratio("non-sticky GET / aiohttp-session", "non-sticky", "aiohttp-session", "GET", ""),
    Ratio("non-sticky POST / aiohttp-session", "non-sticky", "aiohttp-session", "POST", ""),
)


def read_response(sock: socket.socket) -> bytes:
    """One whole response (Content-Length framed) off a keep-alive connection; its head."""
    data = b""
    while True:
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            match = re.search(rb"(?im)^content-length: *(\d+)", head)
            if match is None:
                raise RuntimeError(f"response without Content-Length: {head[:200]!r}")
            if len(body) >= int(match[1]):
                return head
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError(f"connection closed mid-response: {data[:200]!r}")
        data += chunk


def post(cookie: bytes, name: str, value: str) -> bytes:
    body = f"dataName={name}&dataValue={value}".encode()
    return (b"POST /test HTTP/1.1\r\nHost: bench\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            + (b"Cookie: JSESSIONID=" + cookie + b"\r\n" if cookie else b"")
            + b"Content-Length: %d\r\n\r\n" % len(body) + body)


def drive(port: int, scenario: str, count: int) -> None:
    """A session with ATTRIBUTES, then `count` requests of `scenario` on it after a warm-up
    of one per connection; every answer must be a 200."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        try:
            first = socket.create_connection(("127.0.0.1", port), timeout=REPLY_TIMEOUT)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    cookie = b""
    for name, value in ATTRIBUTES.items():
        first.sendall(post(cookie, name, value))
        match = re.search(rb"(?i)set-cookie: JSESSIONID=([^;\r]+)", read_response(first))
        if match:
            cookie = match[1]
    sockets = [first] + [socket.create_connection(("127.0.0.1", port), timeout=REPLY_TIMEOUT)
                         for _ in range(CONNECTIONS - 1)]
    get = b"GET /test HTTP/1.1\r\nHost: bench\r\nCookie: JSESSIONID=" + cookie + b"\r\n\r\n"
    try:
        for number in range(-CONNECTIONS, count):
            sock = sockets[number % CONNECTIONS]
            sock.sendall(get if scenario == "GET" else post(cookie, "x", f"y{number}"))
            head = read_response(sock)
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"not a 200: {head[:200]!r}")
    finally:
        for sock in sockets:
            sock.close()


_PORTS_GIVEN: set[int] = set()
_PORTS_LOCK = threading.Lock()


def unique_port() -> int:
    """A free port no other run of this benchmark has been given: the runs start side by
    side, and the system may hand a port just closed to the next one who asks."""
    with _PORTS_LOCK:
        while (port := free_port()) in _PORTS_GIVEN:
            pass
        _PORTS_GIVEN.add(port)
        return port


def instructions(variant: str, scenario: str, count: int, scratch: Path) -> int:
    """Instructions (user space) of one server run that served `count` requests."""
    memcached_ports = [unique_port() for _ in range(NODES[variant])]
    port = unique_port()
    addresses = ",".join(f"127.0.0.1:{p}" for p in memcached_ports)
    out = scratch / f"{variant}-{scenario}-{count}.callgrind"
    if variant == "appserver":
        env = {"PATH": os.environ["PATH"], "LISTEN": f"127.0.0.1:{port}", "JVM_ROUTE": "app1",
               "MEMCACHED_NODES": f"n1:{addresses}", "ACCESS_LOG": "false"}
        command = [sys.executable, "-m", "appserver"]
    else:
        env = dict(os.environ)
        command = [sys.executable, str(SERVER), variant, str(port), addresses]
    memcached = [subprocess.Popen(memcached_args(p)) for p in memcached_ports]
    for proc, memcached_port in zip(memcached, memcached_ports, strict=True):
        wait_for_port(proc, memcached_port)  # up before the server probes them
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *command],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        drive(port, scenario, count)
    finally:
        server.terminate()
        server.wait(timeout=60)
        for proc in memcached:
            proc.terminate()
            proc.wait(timeout=10)
    match = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"callgrind wrote no total for {variant} {scenario}")
    return int(match[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="N (the runs serve N, 2N)")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated, of: " + ", ".join(VARIANTS))
    args = parser.parse_args()
    variants = [name for name in args.variants.split(",") if name]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s): {', '.join(unknown)}")
    if args.requests < 100:
        parser.error("--requests must be at least 100")
    for tool in ("valgrind", "memcached"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (apt-get install {tool})", file=sys.stderr)
            return 1
    count = args.requests
    jobs = os.cpu_count() or 1  # instruction counts do not suffer from sharing the CPUs
    print(f"callgrind, {count} and {2 * count} requests per run, one at a time over "
          f"{CONNECTIONS} connections, {jobs} runs at once; user-space instructions per "
          f"request", flush=True)
    runs = [(variant, scenario) for scenario in SCENARIOS for variant in variants]
    with tempfile.TemporaryDirectory(prefix="session-instructions-") as scratch, \
            ThreadPoolExecutor(jobs) as pool:
        totals = {
            (variant, scenario, n): pool.submit(instructions, variant, scenario, n,
                                                Path(scratch))
            for variant, scenario in runs for n in (count, 2 * count)
        }
        per_request: dict[tuple[str, str], float] = {}
        for variant, scenario in runs:
            once = totals[variant, scenario, count].result()
            twice = totals[variant, scenario, 2 * count].result()
            figure = per_request[variant, scenario] = (twice - once) / count
            print(f"  {scenario:4} {variant:15} {figure:9.0f}", flush=True)
    print("== ratios")
    for ratio in RATIOS:
        top, bottom = (per_request.get((name, ratio.scenario)) for name in (ratio.top,
                                                                             ratio.bottom))
        if top is not None and bottom is not None:
            print(f"  {ratio.label:50} {top / bottom:5.3f}x  {ratio.goal}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
