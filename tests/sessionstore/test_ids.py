"""Session ids, memcached keys and node choice (items 2, 4 and the pure half of 4/6)."""

from __future__ import annotations

import re

import pytest

from sessionstore.ids import new_session_id, parse_session_id, storage_key
from sessionstore.nodes import NodeTracker, parse_failover_nodes, parse_node_list


def test_new_ids_are_128_random_bits_with_node_and_route() -> None:
    ids = {new_session_id("n2", "app1").text for _ in range(200)}
    assert len(ids) == 200
    for text in ids:
        assert re.fullmatch(r"[0-9A-F]{32}-n2\.app1", text)
        assert parse_session_id(text) is not None


def test_parse_and_resuffix() -> None:
    sid = parse_session_id("3F2504E04F8911D39A0C0305E82C3301-n2.app1")
    assert sid is not None
    assert (sid.random, sid.node, sid.route) == ("3F2504E04F8911D39A0C0305E82C3301", "n2", "app1")
    moved = sid.with_route("app2").with_node("n1")
    assert moved.text == "3F2504E04F8911D39A0C0305E82C3301-n1.app2"
    assert moved.random == sid.random


@pytest.mark.parametrize("text", [
    "", "x", "3F2504E04F8911D39A0C0305E82C3301", "3f2504e04f8911d39a0c0305e82c3301-n1.app1",
    "3F2504E04F8911D39A0C0305E82C330-n1.app1", "3F2504E04F8911D39A0C0305E82C3301-n1.app 1",
    "3F2504E04F8911D39A0C0305E82C3301-n1.app1\r\nflush_all", "3F2504E04F8911D39A0C0305E82C3301-.a",
    "3F2504E04F8911D39A0C0305E82C3301-n1." + "a" * 33, "A" * 10_000,
    "3F2504E04F8911D39A0C0305E82C3301-n1.app1\n",
])
def test_malformed_ids_are_refused(text: str) -> None:
    assert parse_session_id(text) is None


def test_one_function_builds_every_key() -> None:
    sid = parse_session_id("3F2504E04F8911D39A0C0305E82C3301-n2.app1")
    assert sid is not None
    assert storage_key("", sid) == b"3F2504E04F8911D39A0C0305E82C3301-n2.app1"
    assert storage_key("p:", sid, "backup") == b"p:bak:3F2504E04F8911D39A0C0305E82C3301-n2.app1"
    assert storage_key("", sid, "lock") == b"lock:3F2504E04F8911D39A0C0305E82C3301-n2.app1"


def tracker(text: str, failover: str = "", retry: float = 10.0) -> NodeTracker:
    nodes = parse_node_list(text)
    return NodeTracker(nodes, parse_failover_nodes(failover, nodes), retry)


def test_new_sessions_spread_evenly_over_alive_regular_nodes() -> None:
    t = tracker("n1:h:1,n2:h:2,n3:h:3,n4:h:4,n5:h:5", failover="n5")
    picks = [t.choose_for_new(0.0) for _ in range(400)]
    assert {node: picks.count(node) for node in set(picks)} == {
        "n1": 100, "n2": 100, "n3": 100, "n4": 100}
    t.mark_dead("n2", 0.0)
    picks = [t.choose_for_new(1.0) for _ in range(300)]
    assert {node: picks.count(node) for node in set(picks)} == {"n1": 100, "n3": 100, "n4": 100}


def test_failover_nodes_only_when_no_regular_node_is_alive() -> None:
    t = tracker("n1:h:1,n2:h:2", failover="n1")
    assert {t.choose_for_new(0.0) for _ in range(4)} == {"n2"}
    t.mark_dead("n2", 0.0)
    assert t.choose_for_new(1.0) == "n1"
    assert t.home_for("n2", 1.0) == "n1"  # relocation away from the dead node
    assert t.home_for("n1", 1.0) == "n1"  # failover node kept while nothing else is alive
    assert t.home_for("n1", 10.0) == "n2"  # n2 back after the retry interval
    t.mark_dead("n1", 20.0)
    t.mark_dead("n2", 20.0)
    assert t.home_for("n2", 21.0) == "n2"  # all dead: the id is not churned


def test_dead_node_is_skipped_for_the_retry_interval_then_probed() -> None:
    t = tracker("n1:h:1,n2:h:2", retry=10.0)
    assert t.mark_dead("n1", 100.0) is True
    assert t.mark_dead("n1", 101.0) is False  # the same outage, not a new failure
    assert not t.is_alive("n1", 110.9)
    assert t.is_alive("n1", 111.0)  # back in rotation; the next operation is the probe
    assert [s.alive for s in t.statuses(111.0)] == [True, True]


def test_backup_nodes_follow_in_list_order() -> None:
    t = tracker("n1:h:1,n2:h:2,n3:h:3")
    assert t.backup_nodes_after("n2", 0.0) == ["n3", "n1"]
    t.mark_dead("n3", 0.0)
    assert t.backup_nodes_after("n2", 1.0) == ["n1"]


@pytest.mark.parametrize(("header", "value"), [
    (None, None), ("", None), ("JSESSIONID=abc", "abc"), ("a=1; JSESSIONID=abc; b=2", "abc"),
    ("XJSESSIONID=no; JSESSIONID=yes", "yes"), ('JSESSIONID="quoted"', "quoted"),
    ("other=JSESSIONID=no", None), ("a=1;JSESSIONID=tight", "tight"),
])
def test_session_cookie_is_found_in_the_cookie_header(header: str | None,
                                                       value: str | None) -> None:
    from sessionstore.tracking import cookie_value as _cookie_value

    assert _cookie_value(header, "JSESSIONID") == value
