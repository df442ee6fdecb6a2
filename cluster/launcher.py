"""`sessionha up`: start the whole topology, serve the control socket, stop on Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import TextIO

from .control import launcher_running, serve_control
from .errors import ClusterError
from .health import status_prefix
from .invocation import cli_command, typed
from .logs import LogPrinter, wants_colour
from .preflight import preflight
from .rundir import RunDir
from .status import format_table
from .supervisor import Cluster
from .topology import Address, Topology, load_topology

# Ctrl-C, `kill`, and a closed terminal all stop the members in order.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def banner(topology: Topology, command: str) -> list[str]:
    """What to do next, printed once every member is healthy; `command` is how this
    launcher is typed again (cli_command())."""
    lines = []
    for proxy in topology.of_role("proxy"):
        scheme = "https" if proxy.listen_is_ssl else "http"
        base = f"{scheme}://{Address(proxy.listen.connect_host, proxy.listen.port)}"
        https = proxy.https
        # With an ssl listener, the page is opened over https; the status page stays where
        # the launcher probes it.
        page = f"https://{Address(https.connect_host, https.port)}" if https else base
        lines.append(f"Open {page}/test   (proxy status: {base}{status_prefix(proxy)}/status)")
    program = command.split()[0]
    relative = "/" in program and not program.startswith("/")
    where = "In another terminal, in this directory:" if relative else "In another terminal:"
    lines.append(f"{where} {command} status   (and: kill, stop, start MEMBER)")
    lines.append("Ctrl-C here stops the cluster.\n")
    return lines


async def _run(
    topology: Topology, config: Path, run_dir: RunDir, out: TextIO, health_timeout: float
) -> int:
    if launcher_running(run_dir.control_socket):
        raise ClusterError(
            f"a cluster is already running from {run_dir.path} (see: {cli_command()} status)"
        )
    memcached = preflight(topology, typed(config))
    log = LogPrinter(topology.names, out, colour=wants_colour(out))
    cluster: Cluster

    def save_state() -> None:
        with contextlib.suppress(OSError):
            run_dir.write_state(launcher_pid=os.getpid(), config=config, members=cluster.statuses())

    cluster = Cluster(
        topology,
        config=config,
        python=sys.executable,
        memcached=memcached,
        running_as_root=os.geteuid() == 0,
        env=os.environ,
        log=log,
        health_timeout=health_timeout,
        on_change=save_state,
    )
    stop_requested = asyncio.Event()
    signals_seen = 0

    def on_signal() -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            stop_requested.set()
            log.launcher_line("Stopping the cluster (Ctrl-C again to kill it)...")
        else:
            cluster.kill_all_now()

    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal)
    server = await serve_control(cluster, run_dir.control_socket)
    try:
        starting = asyncio.create_task(cluster.start_all())
        stopping = asyncio.create_task(stop_requested.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            starting.result()  # a member that failed to start ends the launcher here
            log.launcher_line("\n" + format_table(cluster.statuses()) + "\n")
            for line in banner(topology, cli_command()):
                log.launcher_line(line)
            await stopping
        else:
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, ClusterError):
                await starting
        return 0
    finally:
        server.close()
        await cluster.shutdown()
        with contextlib.suppress(Exception):
            await server.wait_closed()
        run_dir.clear()
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)


def up(
    config: Path, run_dir_override: Path | None, *, health_timeout: float, out: TextIO = sys.stdout
) -> int:
    """Run the cluster until Ctrl-C or SIGTERM; ClusterError for anything the user must fix."""
    topology = load_topology(config)
    run_dir = RunDir.choose(run_dir_override)
    run_dir.prepare()
    return asyncio.run(_run(topology, config.resolve(), run_dir, out, health_timeout))
