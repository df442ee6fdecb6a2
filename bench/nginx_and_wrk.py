"""The processes of bench/proxy_vs_nginx.py: free ports, nginx started from a generated
configuration, wrk runs and what they print, CPU time and CPU pinning from /proc."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from pathlib import Path


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
    url: str,
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
            url,
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
