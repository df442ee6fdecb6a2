"""What the launcher tells the user: the banner, the command to type, the health paths."""

from __future__ import annotations

import os
import socket
import tomllib
from pathlib import Path

import pytest

from cluster.errors import PreflightError
from cluster.health import health_path, status_prefix
from cluster.invocation import cli_command, typed
from cluster.launcher import banner
from cluster.preflight import check_port_free
from cluster.topology import load_topology, parse_topology

REPO = Path(__file__).resolve().parents[2]


def test_the_banner_names_the_configured_status_page_and_a_command_that_works() -> None:
    topology = load_topology(REPO / "cluster.toml")
    assert banner(topology, ".venv/bin/sessionha") == [
        "Open http://127.0.0.1:8080/test   (proxy status: http://127.0.0.1:8080/_proxy/status)",
        "In another terminal, in this directory: .venv/bin/sessionha status"
        "   (and: kill, stop, start MEMBER)",
        "Ctrl-C here stops the cluster.\n",
    ]
    custom = parse_topology(
        tomllib.loads('[proxy.lb]\nlisten = "0.0.0.0:9"\nupstreams = "a=127.0.0.1:1"\n'
                      'status_prefix = "/_lb/"\n')
    )
    lines = banner(custom, "/opt/sha/bin/sessionha")
    assert lines[0] == "Open http://127.0.0.1:9/test   (proxy status: http://127.0.0.1:9/_lb/status)"
    assert lines[1].startswith("In another terminal: /opt/sha/bin/sessionha status")
    assert banner(custom, "sessionha")[1].startswith("In another terminal: sessionha status")


def test_health_paths_follow_the_proxy_settings() -> None:
    topology = load_topology(REPO / "cluster.toml")
    assert health_path(topology.member("app1")) == "/health"
    assert health_path(topology.member("proxy")) == "/_proxy/status.json"
    custom = parse_topology(
        tomllib.loads('[proxy.lb]\nlisten = "127.0.0.1:9"\nupstreams = "a=127.0.0.1:1"\n'
                      'status_prefix = "/ops/lb/"\n')
    ).member("lb")
    assert (status_prefix(custom), health_path(custom)) == ("/ops/lb", "/ops/lb/status.json")
    # Settings the proxy refuses: it exits with its own error; the launcher keeps the default.
    broken = parse_topology(tomllib.loads('[proxy.lb]\nlisten = "127.0.0.1:9"\n')).member("lb")
    assert health_path(broken) == "/_proxy/status.json"


def test_the_command_to_type_is_the_one_that_ran(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / ".venv" / "bin" / "sessionha"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert cli_command(str(script)) == os.path.join(".venv", "bin", "sessionha")
    assert cli_command(".venv/bin/sessionha") == ".venv/bin/sessionha"
    monkeypatch.chdir(REPO)
    assert cli_command(str(script)) == str(script)  # outside: the absolute path
    monkeypatch.setenv("PATH", str(script.parent))
    assert cli_command(str(script)) == "sessionha"  # what the PATH finds: the bare name
    assert cli_command(str(REPO / "cluster" / "__main__.py")).endswith(" -m cluster")
    monkeypatch.chdir(tmp_path)
    assert typed(tmp_path / "sessionha") == "./sessionha"  # never a PATH lookup


def test_a_port_in_use_says_what_to_do() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        member = parse_topology(
            tomllib.loads(f'[memcached.n1]\nlisten = "127.0.0.1:{port}"\n')
        ).member("n1")
        with pytest.raises(PreflightError) as raised:
            check_port_free(member, "cluster.toml")
    assert str(raised.value) == (
        f"port {port} is already in use (n1 wants to listen on 127.0.0.1:{port}): "
        "stop what holds it, or give n1 another port in cluster.toml"
    )
