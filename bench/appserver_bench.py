"""Benchmark: the app server's /test page against a bare aiohttp handler serving the same bytes.

Starts a real memcached, one `python -m appserver` process (uvloop, access log off) and a
bare aiohttp process that answers every request with the exact bytes of the /test page,
then drives each with wrk and prints requests/s, p99 latency, server CPU per request and
the ratios, all measured in this run. Bounded: about a minute in all.

    .venv/bin/python bench/appserver_bench.py [--duration 8] [--connections 16]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

BARE_SERVER = r"""
import sys
import uvloop
from aiohttp import web

body = open(sys.argv[2], "rb").read()

async def page(request):
    return web.Response(body=body, content_type="text/html", charset="utf-8")

app = web.Application()
app.router.add_route("*", "/test", page)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None,
            loop=uvloop.new_event_loop())
"""

_POST_SCRIPT = """
wrk.method = "POST"
local cookies = {%s}
local n = 0
request = function()
  n = n + 1
  local headers = {
    ["Content-Type"] = "application/x-www-form-urlencoded",
    ["Cookie"] = "JSESSIONID=" .. cookies[n %% #cookies + 1],
  }
  return wrk.format(nil, nil, headers, %s)
end
"""


def wrk_post_script(cookies: list[str], body: str) -> str:
    """A wrk Lua script: each POST goes to the next of `cookies`' sessions, with the form
    body that the Lua expression `body` makes of the request number `n`."""
    return _POST_SCRIPT % (", ".join(f'"{c}"' for c in cookies), body)


# Each POST goes to the next of many sessions (one user rarely posts 16 times at once) and
# sets one of five names to a new value: a changed session, so one backup per request.
_FIVE_NAMES_BODY = '"dataName=item" .. (n % 5) .. "&dataValue=value" .. n'
POST_SESSIONS = 64


@dataclass
class Result:
    name: str
    requests_per_second: float
    p99_ms: float
    cpu_us_per_request: float
    requests: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(proc: subprocess.Popen[bytes], port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{proc.args!r} does not listen on 127.0.0.1:{port}")


@contextmanager
def process(args: list[str], port: int, env: dict[str, str] | None = None) -> Iterator[int]:
    """Run a server process until the block ends; yields its pid."""
    proc = subprocess.Popen(
        args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(proc, port)
        yield proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(
    name: str,
    url: str,
    pid: int,
    *,
    duration: int,
    connections: int,
    cookie: str = "",
    script: Path | None = None,
    before: Callable[[], None] | None = None,
    cpus: set[int] | None = None,
) -> Result:
    """One measured wrk run after an unmeasured warm-up; `before` runs right before it. With
    `cpus`, wrk runs on those only."""
    args = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "5s"]
    if cookie:
        args += ["-H", f"Cookie: JSESSIONID={cookie}"]
    if script is not None:
        args += ["-s", str(script)]
    # a short warm-up first, unmeasured
    def on_cpus() -> None:
        if cpus is not None:
            os.sched_setaffinity(0, cpus)

    subprocess.run([*args[:3], "-d1s", *args[4:], url], check=True, capture_output=True,
                   timeout=30, preexec_fn=on_cpus)
    if before is not None:
        before()
    cpu_before = cpu_seconds(pid)
    out = subprocess.run(
        [*args, url], check=True, capture_output=True, text=True, timeout=duration + 30,
        preexec_fn=on_cpus,
    ).stdout
    cpu = cpu_seconds(pid) - cpu_before
    total = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{name}: {errors[1]} error responses\n{out}")
    return Result(
        name,
        float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]),  # type: ignore[index]
        latency_ms(re.search(r"99%\s+([\d.]+\w+)", out)[1]),  # type: ignore[index]
        cpu / total * 1e6,
        total,
    )


def latency_ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def fetch(url: str, cookie: str = "") -> tuple[bytes, str]:
    headers = {"Cookie": f"JSESSIONID={cookie}"} if cookie else {}
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=5) as response:
        set_cookie = response.headers.get("Set-Cookie", "")
        match = re.search(r"JSESSIONID=([^;]+)", set_cookie)
        return response.read(), match[1] if match else cookie


def metric(base_url: str, name: str) -> float:
    """One un-labelled sample of the app server's /metrics."""
    text = fetch(base_url + "/metrics")[0].decode()
    return float(re.search(rf"^{name} (\S+)$", text, re.MULTILINE)[1])  # type: ignore[index]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=8, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    for tool in ("wrk", "memcached"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (scripts/install installs it)", file=sys.stderr)
            return 1

    memcached_port, app_port, bare_port = free_port(), free_port(), free_port()
    env = {
        "PATH": os.environ["PATH"],
        "LISTEN": f"127.0.0.1:{app_port}",
        "JVM_ROUTE": "app1",
        "MEMCACHED_NODES": f"n1:127.0.0.1:{memcached_port}",
    }
    with (
        tempfile.TemporaryDirectory() as scratch,
        process(
            [
                "memcached",
                "-l",
                "127.0.0.1",
                "-p",
                str(memcached_port),
                "-U",
                "0",
                "-m",
                "64",
                "-u",
                "nobody",
            ],
            memcached_port,
        ),
        process([sys.executable, "-m", "appserver"], app_port, env) as app_pid,
    ):
        page_url = f"http://127.0.0.1:{app_port}/test"
        _, cookie = fetch(page_url + "?dataName=fruit&dataValue=apple")
        fetch(page_url + "?dataName=colour&dataValue=green", cookie)
        fetch(page_url + "?dataName=count&dataValue=3", cookie)
        page, _ = fetch(page_url, cookie)
        page_file = Path(scratch) / "page.html"
        page_file.write_bytes(page)
        post_script = Path(scratch) / "post.lua"
        post_cookies = [fetch(page_url)[1] for _ in range(POST_SESSIONS)]
        post_script.write_text(wrk_post_script(post_cookies, _FIVE_NAMES_BODY))

        common = {"duration": args.duration, "connections": args.connections}
        get = wrk("GET /test (existing session)", page_url, app_pid, cookie=cookie, **common)
        backups = "sessionha_sessionstore_backups_written_total"
        written_before = [0.0]  # read after the warm-up, whose POSTs are not counted

        def count_backups() -> None:
            written_before[0] = metric(f"http://127.0.0.1:{app_port}", backups)

        post = wrk(
            "POST /test (set an entry)",
            page_url,
            app_pid,
            script=post_script,
            before=count_backups,
            **common,
        )
        written = metric(f"http://127.0.0.1:{app_port}", backups) - written_before[0]
        with process(
            [sys.executable, "-c", BARE_SERVER, str(bare_port), str(page_file)], bare_port
        ) as bare_pid:
            bare = wrk(
                "bare aiohttp handler, same bytes",
                f"http://127.0.0.1:{bare_port}/test",
                bare_pid,
                **common,
            )

    print(
        f"wrk -t1 -c{args.connections} -d{args.duration}s; one server process each, uvloop; "
        f"page {len(page)} bytes; {os.cpu_count()} CPUs shared with wrk"
    )
    print(f"{'':34} {'req/s':>9} {'p99 ms':>8} {'CPU us/req':>11} {'req/s vs bare':>14}")
    for result in (get, post, bare):
        print(
            f"{result.name:34} {result.requests_per_second:9.0f} {result.p99_ms:8.2f} "
            f"{result.cpu_us_per_request:11.1f} "
            f"{result.requests_per_second / bare.requests_per_second:14.2f}"
        )
    print(f"backups written per POST: {written / post.requests:.2f} (1.00: every POST stored)")
    print(
        f"CPU per request vs bare: GET {get.cpu_us_per_request / bare.cpu_us_per_request:.2f}x, "
        f"POST {post.cpu_us_per_request / bare.cpu_us_per_request:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
