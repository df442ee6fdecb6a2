"""Throughput and p99 of `python -m proxy` against nginx as a proxy, same backend.

Starts one nginx as the fast backend (`return 200`), one nginx as a reverse
proxy (one worker, upstream keep-alive) and this proxy (one process) in front
of that same backend, then runs wrk against both proxies in alternation, three
rounds each, for a small body and for a 1 MB body. Prints requests/s, p99
latency and CPU time per request (user + system, of the proxy process or the
nginx worker) per round, the medians, and the ratios proxy/nginx.

Both proxies get the same treatment: one process (one nginx worker), the same
backend, the same wrk parameters, a warm-up run, alternation round by round, and
the same request headers added (nginx is told to set X-Forwarded-Host,
X-Forwarded-Proto and to pass Host through, as the proxy does, and to stream
large bodies through memory instead of temporary files). With `--pin`,
the proxy under test runs alone on CPU 0 and wrk and the backend on CPU 1 (for
both proxies alike), so that each proxy has one whole core, as with one worker
in production; without it (the default) the scheduler shares all CPUs among
all four processes. Other load on the machine skews both; the CPU time per
request is the steadier figure.

    .venv/bin/python bench/proxy_vs_nginx.py [--duration 5] [--connections 50] [--pin]
        [--header "Connection: keep-alive"]  (sent with every request, as browsers do)

Needs the nginx and wrk binaries (Debian packages nginx-light and wrk).
Ratios only mean something within one run on one machine.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_SMALL_BODY = "hello from the backend\\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on 127.0.0.1:{port}") from None
            time.sleep(0.05)


def nginx_conf(workdir: Path, server_block: str, upstream_block: str = "") -> Path:
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = f"""{user}worker_processes 1;
daemon off;
pid {workdir}/nginx-{id(server_block)}.pid;
error_log {workdir}/error-{id(server_block)}.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    keepalive_requests 1000000;
    {upstream_block}
    server {{
        {server_block}
    }}
}}
"""
    path = workdir / f"nginx-{id(server_block)}.conf"
    path.write_text(conf)
    return path


def start_nginx(conf: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["nginx", "-c", str(conf), "-p", str(conf.parent)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pin(pid: int, cpus: set[int] | None) -> None:
    """Keep a process (and the threads it has) on `cpus`; None leaves it alone."""
    if cpus is None:
        return
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), cpus)


def run_wrk(
    port: int,
    path: str,
    duration: float,
    connections: int,
    cpus: set[int] | None = None,
    headers: tuple[str, ...] = (),
) -> tuple[float, float, int]:
    """(requests per second, p99 latency in ms, requests completed)."""
    result = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "--latency",
            "--timeout",
            "5s",
            *(part for header in headers for part in ("-H", header)),
            f"http://127.0.0.1:{port}{path}",
        ],
        capture_output=True,
        text=True,
        timeout=duration + 30,
        check=True,
        preexec_fn=None if cpus is None else lambda: os.sched_setaffinity(0, cpus),
    )
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", result.stdout).group(1))  # type: ignore[union-attr]
    match = re.search(r"99%\s+([\d.]+)(us|ms|s)", result.stdout)
    assert match is not None, result.stdout
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[match.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", result.stdout)
    if errors:
        print(f"    (warning: {errors.group(1)} non-2xx responses)")
    total = re.search(r"(\d+) requests in", result.stdout)
    assert total is not None, result.stdout
    return rps, float(match.group(1)) * scale, int(total.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        help="request header wrk sends with every request (repeatable)",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="proxy under test on CPU 0, wrk and backend on CPU 1 (needs 2 CPUs)",
    )
    args = parser.parse_args()
    if args.pin and len(os.sched_getaffinity(0)) < 2:
        print("--pin needs two CPUs", file=sys.stderr)
        return 2
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (Debian packages nginx-light and wrk)", file=sys.stderr)
            return 2
    repo = Path(__file__).resolve().parent.parent
    backend_port, nginx_port, proxy_port = free_port(), free_port(), free_port()
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="proxy-bench-") as tmp:
        workdir = Path(tmp)
        big = workdir / "big.bin"
        big.write_bytes(os.urandom(1024 * 1024))
        backend = nginx_conf(
            workdir,
            f"""listen 127.0.0.1:{backend_port} backlog=4096;
        location = /small {{ default_type text/plain; return 200 "{_SMALL_BODY}"; }}
        location = /big.bin {{ root {workdir}; }}""",
        )
        front = nginx_conf(
            workdir,
            f"""listen 127.0.0.1:{nginx_port} backlog=4096;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Real-IP $remote_addr;
            # Large bodies stream through memory, as in this proxy, not via temp files.
            proxy_max_temp_file_size 0;
        }}""",
            f"upstream backend {{ server 127.0.0.1:{backend_port}; keepalive 64; }}",
        )
        env = dict(
            os.environ,
            LISTEN=f"127.0.0.1:{proxy_port}",
            UPSTREAMS=f"backend=127.0.0.1:{backend_port}",
            POLICY="round_robin",
            HEALTH_INTERVAL="0",
            KEEPALIVE="64",
        )
        try:
            processes.append(start_nginx(backend))
            processes.append(start_nginx(front))
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "proxy"],
                    cwd=repo,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            for port in (backend_port, nginx_port, proxy_port):
                wait_for_port(port)
            # Whose CPU time to count: the front nginx's worker, and the proxy process.
            workers = children_of(processes[1].pid)
            cpu_pid = {
                "nginx": workers[0] if workers else processes[1].pid,
                "proxy": processes[2].pid,
            }
            cpus = sorted(os.sched_getaffinity(0))
            if args.pin:
                proxy_cpus, load_cpus = {cpus[0]}, {cpus[1]}
                for pid in (processes[0].pid, *children_of(processes[0].pid)):
                    pin(pid, load_cpus)  # the backend
                for pid in (processes[1].pid, *workers, processes[2].pid):
                    pin(pid, proxy_cpus)  # both proxies under test
                print(
                    f"pinned: proxies under test on CPU {cpus[0]}, wrk and backend on CPU {cpus[1]}"
                )
            else:
                load_cpus = None
                print(f"not pinned: all processes share CPUs {cpus}")
            headers = tuple(args.header)
            if headers:
                print(f"every request also sends: {', '.join(headers)}")
            for label, path in (("small body", "/small"), ("1 MB body", "/big.bin")):
                connections = args.connections if path == "/small" else 10
                print(f"== {label}: wrk -t1 -c{connections} -d{args.duration:g}s")
                for port in (nginx_port, proxy_port):  # warm-up
                    run_wrk(port, path, 1.0, connections, load_cpus, headers)
                figures: dict[str, list[tuple[float, float, float]]] = {"nginx": [], "proxy": []}
                for round_number in range(1, args.rounds + 1):
                    for name, port in (("nginx", nginx_port), ("proxy", proxy_port)):
                        before = cpu_seconds(cpu_pid[name])
                        rps, p99, total = run_wrk(
                            port, path, args.duration, connections, load_cpus, headers
                        )
                        cpu_us = (cpu_seconds(cpu_pid[name]) - before) / max(1, total) * 1e6
                        figures[name].append((rps, p99, cpu_us))
                        print(
                            f"  round {round_number} {name:5}: {rps:10.0f} req/s  "
                            f"p99 {p99:8.2f} ms  cpu {cpu_us:6.1f} us/request"
                        )
                nginx_rps = statistics.median(f[0] for f in figures["nginx"])
                proxy_rps = statistics.median(f[0] for f in figures["proxy"])
                nginx_p99 = statistics.median(f[1] for f in figures["nginx"])
                proxy_p99 = statistics.median(f[1] for f in figures["proxy"])
                nginx_cpu = statistics.median(f[2] for f in figures["nginx"])
                proxy_cpu = statistics.median(f[2] for f in figures["proxy"])
                print(
                    f"  median nginx {nginx_rps:.0f} req/s p99 {nginx_p99:.2f} ms | "
                    f"proxy {proxy_rps:.0f} req/s p99 {proxy_p99:.2f} ms"
                )
                print(
                    f"  ratio proxy/nginx: throughput {proxy_rps / nginx_rps:.2f}x "
                    f"(target >= 0.8), p99 {proxy_p99 / nginx_p99:.2f}x (target <= 2)"
                )
                print(
                    f"  cpu per request: nginx {nginx_cpu:.1f} us, proxy {proxy_cpu:.1f} us "
                    f"({proxy_cpu / nginx_cpu:.2f}x)"
                )
                # Other load on the machine only ever slows a round down: the best round of
                # each is the least disturbed one.
                best_nginx = max(figures["nginx"])
                best_proxy = max(figures["proxy"])
                print(
                    f"  best rounds: nginx {best_nginx[0]:.0f} req/s, proxy {best_proxy[0]:.0f} "
                    f"req/s: throughput {best_proxy[0] / best_nginx[0]:.2f}x, "
                    f"p99 {best_proxy[1] / best_nginx[1]:.2f}x"
                )
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
