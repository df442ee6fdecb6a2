"""Throughput and p99 of `python -m proxy` against nginx as a proxy, same backend.

Starts one nginx as the fast backend (`return 200`), one nginx as a reverse
proxy (one worker, upstream keep-alive) and this proxy (one process) in front
of that same backend, then runs wrk against both proxies in alternation, three
rounds each, for a small body and for a 1 MB body, then over https: keep-alive
requests (small body) and new connections (`Connection: close`, one TLS handshake
per request), both proxies serving the same certificate (P-256, from
scripts/make-certificate) with the same protocols and ciphers (the proxy's
defaults). Prints requests/s, p99 latency and CPU time per request (user +
system, of the proxy process or the nginx worker) per round, the medians, and
the ratios proxy/nginx.

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
        [--status-page]  (once more for the small body, the proxy's live status page
                          open: its event stream read by a client all along)

Needs the nginx and wrk binaries (Debian packages nginx-light and wrk).
Ratios only mean something within one run on one machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from nginx_and_wrk import (  # noqa: E402  (bench/, beside this file)
    children_of,
    cpu_seconds,
    free_port,
    nginx_conf,
    pin,
    run_wrk,
    start_nginx,
    wait_for_port,
)

from proxy.values import DEFAULT_CIPHERS, DEFAULT_PROTOCOLS  # noqa: E402

_SMALL_BODY = "hello from the backend\\n"


CLOSE = "Connection: close"  # a new connection, so a new TLS handshake, per request


def compare(
    urls: dict[str, str],
    args: argparse.Namespace,
    connections: int,
    load_cpus: set[int] | None,
    headers: tuple[str, ...],
    cpu_pid: dict[str, int],
) -> float:
    """Alternating wrk rounds against nginx and the proxy; prints them and the medians and
    returns the median throughput ratio proxy/nginx."""
    for url in urls.values():  # warm-up
        run_wrk(url, 1.0, connections, load_cpus, headers)
    figures: dict[str, list[tuple[float, float, float]]] = {"nginx": [], "proxy": []}
    for round_number in range(1, args.rounds + 1):
        for name, url in urls.items():
            before = cpu_seconds(cpu_pid[name])
            rps, p99, total = run_wrk(url, args.duration, connections, load_cpus, headers)
            cpu_us = (cpu_seconds(cpu_pid[name]) - before) / max(1, total) * 1e6
            figures[name].append((rps, p99, cpu_us))
            print(
                f"  round {round_number} {name:5}: {rps:10.0f} req/s  "
                f"p99 {p99:8.2f} ms  cpu {cpu_us:6.1f} us/request"
            )
    nginx_rps, nginx_p99, nginx_cpu = (
        statistics.median(f[i] for f in figures["nginx"]) for i in range(3)
    )
    proxy_rps, proxy_p99, proxy_cpu = (
        statistics.median(f[i] for f in figures["proxy"]) for i in range(3)
    )
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
    # Other load on the machine only ever slows a round down: the best round of each is
    # the least disturbed one.
    best_nginx, best_proxy = max(figures["nginx"]), max(figures["proxy"])
    print(
        f"  best rounds: nginx {best_nginx[0]:.0f} req/s, proxy {best_proxy[0]:.0f} "
        f"req/s: throughput {best_proxy[0] / best_nginx[0]:.2f}x, "
        f"p99 {best_proxy[1] / best_nginx[1]:.2f}x"
    )
    return proxy_rps / nginx_rps


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
        "--status-page",
        action="store_true",
        help="also run the small body with the proxy's status event stream being read",
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
    backend_port, nginx_port, proxy_port = free_port(), free_port(), free_port()
    nginx_tls_port, proxy_tls_port = free_port(), free_port()
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="proxy-bench-") as tmp:
        workdir = Path(tmp)
        big = workdir / "big.bin"
        big.write_bytes(os.urandom(1024 * 1024))
        certs = workdir / "certs"
        subprocess.run(
            [REPO / "scripts" / "make-certificate", certs], check=True, capture_output=True
        )
        cert, key = certs / "cert.pem", certs / "key.pem"
        backend = nginx_conf(
            workdir,
            f"""listen 127.0.0.1:{backend_port} backlog=4096;
        location = /small {{ default_type text/plain; return 200 "{_SMALL_BODY}"; }}
        location = /big.bin {{ root {workdir}; }}""",
        )
        front = nginx_conf(
            workdir,
            f"""listen 127.0.0.1:{nginx_port} backlog=4096;
        listen 127.0.0.1:{nginx_tls_port} ssl backlog=4096;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols {" ".join(DEFAULT_PROTOCOLS)};
        ssl_ciphers {DEFAULT_CIPHERS};
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
            LISTEN=f"127.0.0.1:{proxy_port},127.0.0.1:{proxy_tls_port} ssl",
            SSL_CERTIFICATE=str(cert),
            SSL_CERTIFICATE_KEY=str(key),
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
                    cwd=REPO,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            for port in (backend_port, nginx_port, proxy_port, nginx_tls_port, proxy_tls_port):
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
            http = {
                "nginx": f"http://127.0.0.1:{nginx_port}",
                "proxy": f"http://127.0.0.1:{proxy_port}",
            }
            https = {
                "nginx": f"https://127.0.0.1:{nginx_tls_port}",
                "proxy": f"https://127.0.0.1:{proxy_tls_port}",
            }
            runs = (
                ("small body", http, "/small", args.connections, headers),
                ("1 MB body", http, "/big.bin", 10, headers),
                ("https keep-alive, small body", https, "/small", args.connections, headers),
                ("https new connections", https, "/small", args.connections, (*headers, CLOSE)),
            )
            if args.status_page:
                runs += (
                    ("small body, status page open", http, "/small", args.connections, headers),
                )
            ratios = {}
            for label, bases, path, connections, sent in runs:
                print(f"== {label}: wrk -t1 -c{connections} -d{args.duration:g}s")
                urls = {name: base + path for name, base in bases.items()}
                # A browser on the status page: one client reading the live updates.
                viewer = (
                    subprocess.Popen(
                        ["curl", "-sN", f"{http['proxy']}/_proxy/status/events"],
                        stdout=subprocess.DEVNULL,
                    )
                    if "status page" in label
                    else None
                )
                try:
                    ratios[label] = compare(urls, args, connections, load_cpus, sent, cpu_pid)
                finally:
                    if viewer is not None:
                        viewer.terminate()
                        viewer.wait()
            print(
                f"https: keep-alive requests {ratios[runs[2][0]]:.2f}x nginx (target >= 0.7), "
                f"new connections (handshakes) {ratios[runs[3][0]]:.2f}x nginx"
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
