"""The launcher's pure core: topology parsing, member commands, the status table."""

from __future__ import annotations

import io
import tomllib
from pathlib import Path

import pytest

from cluster.commands import member_command
from cluster.errors import TopologyError
from cluster.logs import LogPrinter
from cluster.status import MemberStatus, format_table
from cluster.topology import load_topology, parse_topology

REPO = Path(__file__).resolve().parents[2]


def test_the_repository_topology_is_the_classic_two_host_cluster() -> None:
    topology = load_topology(REPO / "cluster.toml")
    assert [(m.name, m.role, str(m.listen), m.host) for m in topology.members] == [
        ("n1", "memcached", "127.0.0.1:21211", "host1"),
        ("n2", "memcached", "127.0.0.1:21212", "host2"),
        ("app1", "appserver", "127.0.0.1:8081", "host1"),
        ("app2", "appserver", "127.0.0.1:8082", "host2"),
        ("proxy", "proxy", "127.0.0.1:8080", None),
    ]
    app1 = topology.member("app1")
    # Crosswise backup: app1 (host 1) keeps n1 (its own host) only as failover node.
    assert app1.settings["failover_nodes"] == "n1"
    assert app1.settings["sticky"] is True  # role defaults reach every member


def test_member_keys_override_role_defaults() -> None:
    topology = parse_topology(
        tomllib.loads("""
        [memcached]
        memory = 32
        [memcached.a]
        listen = "127.0.0.1:1"
        [memcached.b]
        listen = "127.0.0.1:2"
        memory = 8
        item_size_limit = "2m"
    """)
    )
    assert [(m.memory_mb, m.item_size_limit) for m in topology.members] == [(32, "1m"), (8, "2m")]


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[memcache.n1]\nlisten='127.0.0.1:1'", "unknown table [memcache]"),
        ("[memcached.n1]\nhost='h'", "[memcached.n1]: missing key 'listen'"),
        ("[memcached.n1]\nlisten='127.0.0.1'", "listen must be host:port"),
        ("[memcached.n1]\nlisten='127.0.0.1:70000'", "listen must be host:port"),
        ("[memcached.n1]\nlisten=21211", "listen must be a string"),
        ("[memcached.n1]\nlisten='127.0.0.1:1'\nthreads=4", "unknown key 'threads'"),
        ("[memcached.n1]\nlisten='127.0.0.1:1'\nmemory=0", "memory must be a positive"),
        ("[memcached.n1]\nlisten='127.0.0.1:1'\nitem_size_limit='big'", "item_size_limit"),
        (
            "[memcached.n1]\nlisten='127.0.0.1:1'\n[appserver.n1]\nlisten='127.0.0.1:2'",
            "member name 'n1' is used twice",
        ),
        (
            "[memcached.n1]\nlisten='127.0.0.1:1'\n[appserver.a]\nlisten='0.0.0.0:1'",
            "n1 and a both listen on port 1",
        ),
        ("[appserver]\nsticky=true", "no members"),
        ("[proxy.'bad name']\nlisten='127.0.0.1:1'", "member names are letters"),
    ],
)
def test_impossible_topologies_are_one_line_naming_the_problem(toml: str, message: str) -> None:
    with pytest.raises(TopologyError) as raised:
        parse_topology(tomllib.loads(toml))
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_broken_and_missing_files_name_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[memcached.n1\nlisten = '127.0.0.1:1'\n")
    with pytest.raises(TopologyError, match=r"broken\.toml: invalid TOML"):
        load_topology(broken)
    with pytest.raises(TopologyError, match=r"missing\.toml: no such topology file"):
        load_topology(tmp_path / "missing.toml")


def test_unknown_member_lists_the_known_ones() -> None:
    topology = load_topology(REPO / "cluster.toml")
    with pytest.raises(TopologyError, match=r"unknown member 'app3' \(members: n1, n2, app1"):
        topology.member("app3")


def test_commands_run_python_members_from_the_same_file_and_memcached_unprivileged() -> None:
    topology = load_topology(REPO / "cluster.toml")
    config = REPO / "cluster.toml"
    app = member_command(
        topology.member("app1"), config=config, python="/py", memcached="/mc", running_as_root=True
    )
    assert app.argv == ("/py", "-m", "appserver", "--config", str(config), "--name", "app1")
    assert app.user is None
    proxy = member_command(
        topology.member("proxy"),
        config=config,
        python="/py",
        memcached="/mc",
        running_as_root=False,
    )
    assert proxy.argv[1:3] == ("-m", "proxy")
    n2 = member_command(
        topology.member("n2"), config=config, python="/py", memcached="/mc", running_as_root=True
    )
    assert n2.argv == ("/mc", "-l", "127.0.0.1", "-p", "21212", "-U", "0", "-m", "64", "-I", "1m")
    # Not `-u nobody`: memcached's own setuid would clear the parent-death signal.
    assert n2.user == "nobody"
    as_user = member_command(
        topology.member("n2"), config=config, python="/py", memcached="/mc", running_as_root=False
    )
    assert as_user.user is None


def test_status_table_and_json_round_trip() -> None:
    members = [
        MemberStatus("n1", "memcached", "127.0.0.1:21211", 41, "running"),
        MemberStatus("app1", "appserver", "127.0.0.1:8081", None, "killed"),
    ]
    assert format_table(members).splitlines() == [
        "NAME  ROLE       ADDRESS          PID  STATE",
        "n1    memcached  127.0.0.1:21211  41   running",
        "app1  appserver  127.0.0.1:8081   -    killed",
    ]
    assert [MemberStatus.from_json(m.to_json()) for m in members] == members
    assert set(members[0].to_json()) == {"name", "role", "address", "pid", "state"}


def test_log_lines_are_prefixed_and_aligned_like_compose() -> None:
    out = io.StringIO()
    printer = LogPrinter(["n1", "app1", "proxy"], out, colour=False)
    printer.member_line("n1", "ready")
    printer.member_line("proxy", "listening")
    printer.launcher_line("app1 killed by SIGKILL")
    assert out.getvalue().splitlines() == [
        "n1    | ready",
        "proxy | listening",
        "app1 killed by SIGKILL",
    ]
    assert printer.recent("proxy") == ["listening"]
    coloured = io.StringIO()
    LogPrinter(["n1"], coloured, colour=True).member_line("n1", "x")
    assert coloured.getvalue() == "\x1b[36mn1 | \x1b[0mx\n"


def test_the_non_sticky_topology_differs_only_in_mode() -> None:
    sticky = load_topology(REPO / "cluster.toml")
    non_sticky = load_topology(REPO / "cluster" / "topologies" / "non-sticky.toml")
    assert [(m.name, m.listen) for m in non_sticky.members] == [
        (m.name, m.listen) for m in sticky.members
    ]
    app1 = non_sticky.member("app1").settings
    assert (app1["sticky"], "failover_nodes" in app1) == (False, False)
    assert non_sticky.member("proxy").settings["policy"] == "round_robin"
