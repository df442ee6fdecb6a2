"""The cluster view, the pure part: what two reports of an app server say happened, and
the memcached nodes as every app server sees them."""

from __future__ import annotations

from typing import Any

from proxy.cluster import ClusterView, report_changes
from proxy.health import HealthEvent


def report(
    *,
    alive: dict[str, bool],
    taken: dict[str, int] | None = None,
    relocations: dict[str, dict[str, int]] | None = None,
    failover: str = "",
) -> dict[str, Any]:
    return {
        "route": "app2",
        "status": "ok",
        "sessions_in_memory": 40,
        "sessions_taken_over": sum((taken or {}).values()),
        "taken_over_from": taken or {},
        "sessions_relocated": 0,
        "relocations": relocations or {},
        "backups_failed": 2,
        "nodes": [
            {
                "id": node,
                "host": "127.0.0.1" if node == "n1" else "::1",
                "port": 21211 if node == "n1" else 21212,
                "alive": up,
                "failover": node == failover,
                "evictions": 0,
                "evicting": False,
                "backups_failed": 1,
            }
            for node, up in alive.items()
        ],
    }


def test_the_first_report_tells_nothing_new() -> None:
    assert report_changes("app2", None, report(alive={"n1": True}), 10.0) == []


def test_a_node_that_dies_and_sessions_taken_over_and_relocated_are_events() -> None:
    before = report(alive={"n1": True, "n2": True}, taken={"app1": 3})
    after = report(
        alive={"n1": True, "n2": False},
        taken={"app1": 40, "app3": 1},
        relocations={"n2": {"n1": 1}},
    )
    events = report_changes("app2", before, after, 12.5)
    assert [(e.kind, e.text, e.at) for e in events] == [
        ("node_dead", "n2 marked dead by app2", 12.5),
        ("takeover", "app2 took over 37 sessions from app1", 12.5),
        ("takeover", "app2 took over 1 session from app3", 12.5),
        ("relocation", "session relocated from n2 to n1 by app2", 12.5),
    ]
    back = report_changes("app2", after, report(alive={"n1": True, "n2": True}), 13.0)
    assert [(e.kind, e.text) for e in back] == [("node_alive", "n2 alive again for app2")]


def test_garbage_in_a_report_is_ignored_not_an_error() -> None:
    hostile: dict[str, Any] = {
        "nodes": "none",
        "taken_over_from": {"app1": -5, "app2": "many"},
        "relocations": [],
    }
    assert report_changes("app2", hostile, hostile, 1.0) == []
    assert report_changes("app2", report(alive={"n1": True}), hostile, 1.0) == []
    view = ClusterView()
    view.reported("app2", hostile, 1.0)
    assert view.memcached() == []


def test_every_node_shows_who_sees_it_alive_and_who_backs_up_to_it() -> None:
    view = ClusterView()
    # Crosswise: app1 backs up to n2 (n1 is its failover node), app2 to n1.
    view.reported("app1", report(alive={"n1": True, "n2": False}, failover="n1"), 1.0)
    view.reported("app2", report(alive={"n1": True, "n2": True}, failover="n2"), 1.0)
    nodes = view.memcached()
    assert [n["id"] for n in nodes] == ["n1", "n2"]
    n1, n2 = nodes
    assert n1["address"] == "127.0.0.1:21211" and n2["address"] == "[::1]:21212"
    assert n1["seen_by"] == {"app1": True, "app2": True} and n1["alive"] is True
    # app2 backs up to n1; app1 too, as its n2 is dead and n1 its failover node.
    assert n1["backed_up_by"] == ["app1", "app2"]
    assert n2["seen_by"] == {"app1": False, "app2": True} and n2["backed_up_by"] == []
    assert n1["backups_failed"] == 2  # one from each app server's view


def test_the_timeline_merges_upstream_state_changes_in_time_order() -> None:
    view = ClusterView()
    view.reported("app2", report(alive={"n1": True}), 1.0)
    view.reported("app2", report(alive={"n1": True}, taken={"app1": 5}), 3.0)
    health = [
        HealthEvent(2.0, "app1", "DOWN", "connection refused"),
        HealthEvent(2.5, "app1", "ROUTE", "renamed"),  # not a timeline event
        HealthEvent(4.0, "app1", "UP", ""),
    ]
    assert [(e.at, e.kind, e.text) for e in view.timeline(health)] == [
        (2.0, "upstream_down", "app1 down (connection refused)"),
        (3.0, "takeover", "app2 took over 5 sessions from app1"),
        (4.0, "upstream_up", "app1 back up"),
    ]


def test_a_dead_app_servers_last_report_does_not_count() -> None:
    view = ClusterView()
    view.reported("app1", report(alive={"n1": True}), 1.0)  # then app1 died
    view.reported("app2", report(alive={"n1": False}), 2.0)
    (n1,) = view.memcached(up={"app2"})
    assert (n1["alive"], n1["seen_by"]) == (False, {"app2": False})
    (stale,) = view.memcached()
    assert stale["alive"] is True


def test_failover_nodes_are_backed_up_to_once_the_others_are_dead() -> None:
    view = ClusterView()
    view.reported("app2", report(alive={"n1": False, "n2": True}, failover="n2"), 1.0)
    n1, n2 = view.memcached()
    assert (n1["backed_up_by"], n2["backed_up_by"]) == ([], ["app2"])
