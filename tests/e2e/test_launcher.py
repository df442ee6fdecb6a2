"""`sessionha` itself: control from another terminal, no orphans, one-line errors."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import ClusterFactory
from .launch import launcher_command, pid_alive, run_cli, topology_toml

pytestmark = pytest.mark.e2e


def memcached_version(address: str) -> bytes:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=2) as sock:
        sock.sendall(b"version\r\n")
        return sock.recv(100)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr.endswith("\n") and result.stderr.count("\n") == 1, result.stderr
    for needle in needles:
        assert needle in result.stderr


def test_status_kill_stop_start_act_on_the_running_launcher(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory(roles=("memcached",))
    result = cluster.cli("status", "--json")
    assert result.returncode == 0, result.stderr
    members = json.loads(result.stdout)
    assert [(m["name"], m["role"], m["state"]) for m in members] == [
        ("n1", "memcached", "running"),
        ("n2", "memcached", "running"),
    ]
    assert members[0]["address"] == cluster.address("n1")
    first_pid = members[0]["pid"]

    killed = cluster.cli("kill", "n1")
    assert (killed.returncode, killed.stdout) == (0, "n1 killed\n")
    assert not pid_alive(first_pid)
    stopped = cluster.cli("stop", "n2")
    assert (stopped.returncode, stopped.stdout) == (0, "n2 stopped\n")
    table = cluster.cli("status").stdout.splitlines()
    assert table[0].split() == ["NAME", "ROLE", "ADDRESS", "PID", "STATE"]
    assert [row.split()[3:] for row in table[1:]] == [["-", "killed"], ["-", "stopped"]]

    for name in ("n1", "n2"):
        started = cluster.cli("start", name)
        assert (started.returncode, started.stdout) == (0, f"{name} running\n")
        assert memcached_version(cluster.address(name)).startswith(b"VERSION ")
    restarted = cluster.member("n1")
    assert restarted.state == "running" and restarted.pid != first_pid
    # Restarted members are still the launcher's children, so they die with it.
    assert cluster.process is not None
    assert (
        Path(f"/proc/{restarted.pid}/status").read_text().count(f"PPid:\t{cluster.process.pid}\n")
        == 1
    )

    assert_one_line_error(cluster.cli("start", "n1"), "n1 is already running")
    assert_one_line_error(cluster.cli("kill", "app9"), "unknown member 'app9'", "n1, n2")

    # Ctrl-C stops every member and cleans the run directory up.
    pids = [m.pid for m in cluster.status()]
    cluster.process.send_signal(signal.SIGINT)
    assert cluster.process.wait(timeout=20) == 0
    assert not any(pid_alive(pid) for pid in pids if pid is not None)
    assert sorted(p.name for p in cluster.run_dir.iterdir()) == []
    assert "Stopping the cluster" in cluster.log_tail()


@pytest.mark.parametrize(
    "roles", [("memcached",), ("memcached", "appserver", "proxy")], ids=["memcached", "full-stack"]
)
def test_a_launcher_killed_with_sigkill_leaves_no_member_running(
    cluster_factory: ClusterFactory, roles: tuple[str, ...]
) -> None:
    cluster = cluster_factory(roles=roles)
    if "proxy" in roles:  # what `up` printed: prefixed member logs, the table, the URL
        log = cluster.log_tail(200).splitlines()
        assert any(line.startswith("app1  | ") for line in log)  # aligned on "proxy"
        assert "NAME   ROLE       ADDRESS" in "\n".join(log)
        assert f"Open http://{cluster.address('proxy')}/test" in "\n".join(log)
    cluster.kill("n2")
    cluster.start_member("n2")  # a restarted member must die with the launcher too
    pids = [m.pid for m in cluster.status()]
    assert all(pid is not None and pid_alive(pid) for pid in pids)
    assert cluster.process is not None
    cluster.process.send_signal(signal.SIGKILL)
    cluster.process.wait(timeout=10)
    deadline = time.monotonic() + 10
    while any(pid_alive(pid) for pid in pids if pid is not None) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [pid for pid in pids if pid is not None and pid_alive(pid)] == []
    # Nothing answers on the old socket; a new launcher can take the run directory over.
    assert_one_line_error(cluster.cli("status"), "no cluster is running")


def test_bad_command_lines_are_one_clear_line(
    cluster_factory: ClusterFactory, tmp_path: Path
) -> None:
    assert_one_line_error(run_cli("frobnicate"), "invalid choice: 'frobnicate'")
    assert_one_line_error(run_cli("kill"), "the following arguments are required: MEMBER")
    assert_one_line_error(run_cli("status", "--run-dir", str(tmp_path)), "no cluster is running")
    broken = tmp_path / "broken.toml"
    broken.write_text("[memcached.n1\nlisten = 1\n")
    assert_one_line_error(run_cli("up", "--config", str(broken)), "broken.toml: invalid TOML")
    assert_one_line_error(
        run_cli("up", "--config", str(tmp_path / "nope.toml")), "no such topology file"
    )

    cluster = cluster_factory(roles=("memcached",))
    assert_one_line_error(cluster.cli("stop", "app1"), "unknown member 'app1'")
    assert_one_line_error(
        run_cli("up", "--config", str(cluster.config), *cluster.options), "already running"
    )

    # A port that is already taken: named, and nothing is started.
    other = cluster_factory(started=False, roles=("memcached",))
    busy = other.topology.member("n2").listen
    with socket.socket() as holder:
        holder.bind((busy.host, busy.port))
        holder.listen()
        result = run_cli("up", "--config", str(other.config), *other.options)
    assert_one_line_error(result, f"port {busy.port} is already in use", "n2")


def test_missing_memcached_binary_says_how_to_install_it(tmp_path: Path) -> None:
    config = tmp_path / "cluster.toml"
    config.write_text(topology_toml(roles=("memcached",)))
    no_binaries = tmp_path / "empty-bin"
    no_binaries.mkdir()
    result = subprocess.run(
        launcher_command("up", "--config", str(config), "--run-dir", str(tmp_path / "run")),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PATH": str(no_binaries)},
    )
    assert_one_line_error(result, "memcached is not installed", "apt-get install memcached")


def test_a_member_that_cannot_start_ends_up_with_one_line_naming_it(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory(started=False)
    cluster.config.write_text(
        cluster.toml.replace('jvm_route = "app1"', 'jvm_route = "app1"\nbogus_key = 1')
    )
    result = run_cli("up", "--config", str(cluster.config), *cluster.options)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    assert result.stderr.startswith(
        "sessionha: app1 exited with code 2 while starting; "
        "last output: appserver: bad setting: bogus_key"
    )
    # What had started (memcached, app2) was stopped again, in order.
    assert "app2 exited with code 0" in result.stdout


def test_a_launcher_whose_terminal_went_away_still_stops_on_sigterm(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory(started=False, roles=("memcached",))
    terminal, launcher_side = os.openpty()
    try:
        cluster.start(output=launcher_side)
    finally:
        os.close(launcher_side)
        os.close(terminal)  # from now on every write of the launcher fails with EIO
    cluster.kill("n1")  # the launcher writes "n1 killed by SIGKILL" to the dead terminal
    assert cluster.member("n1").state == "killed"
    pids = [m.pid for m in cluster.status() if m.pid is not None]
    assert cluster.process is not None
    cluster.process.send_signal(signal.SIGTERM)
    assert cluster.process.wait(timeout=20) == 0
    assert not any(pid_alive(pid) for pid in pids)


def test_a_proxy_with_its_own_status_prefix_is_found_healthy_there(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory(started=False)
    cluster.toml = cluster.toml.replace(
        'policy = "sticky"', 'policy = "sticky"\nstatus_prefix = "/ops/lb"'
    )
    cluster.start()  # healthy only if the launcher asked /ops/lb/status.json
    log = cluster.log_tail(200)
    assert f"(proxy status: http://{cluster.address('proxy')}/ops/lb/status)" in log
    assert "/_proxy" not in log
