"""Issue 9, the pure node-choice core with N nodes: new sessions spread evenly over the alive
non-failover nodes, and a node joining or leaving moves only the sessions that must move.
No sockets: node lists and time are plain values."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest

from sessionstore.discovery import node_id_for_address
from sessionstore.nodes import NO_NODE, NodeSpec, NodeTracker, parse_node_list

SESSIONS = 10_000


def static(count: int, failover: frozenset[str] = frozenset()) -> NodeTracker:
    nodes = parse_node_list(",".join(f"n{i}:host{i}:11211" for i in range(1, count + 1)))
    return NodeTracker(nodes, failover, retry_interval=10.0)


def discovered_node(last_octet: int) -> NodeSpec:
    address = f"10.0.1.{last_octet}"
    return NodeSpec(node_id_for_address(address), address, 11211)


def discovered(count: int) -> NodeTracker:
    return NodeTracker([discovered_node(i) for i in range(1, count + 1)], frozenset(),
                       retry_interval=10.0, discovered=True)


def assert_even(placement: Counter[str], nodes: set[str], total: int) -> None:
    """Every node within ±10 % of an even share, and nothing anywhere else."""
    assert set(placement) == nodes
    share = total / len(nodes)
    for node, count in placement.items():
        assert abs(count - share) <= 0.1 * share, (node, count, share)


def place(tracker: NodeTracker, count: int, now: float = 0.0) -> dict[int, str]:
    """`count` new sessions (by number) and the node each one's id names."""
    return {number: tracker.choose_for_new(now) for number in range(count)}


@pytest.mark.parametrize("count", [3, 5])
@pytest.mark.parametrize("make", [static, discovered], ids=["static", "dns"])
def test_new_sessions_spread_evenly(count: int, make: Callable[[int], NodeTracker]) -> None:
    tracker = make(count)
    placement = Counter(place(tracker, SESSIONS).values())
    assert_even(placement, {node.id for node in tracker.nodes}, SESSIONS)
    assert len(placement) == count


@pytest.mark.parametrize("count", [3, 5])
def test_failover_nodes_and_dead_nodes_get_no_new_sessions(count: int) -> None:
    tracker = static(count + 1, failover=frozenset({f"n{count + 1}"}))
    assert_even(Counter(place(tracker, SESSIONS).values()),
                {f"n{i}" for i in range(1, count + 1)}, SESSIONS)
    tracker.mark_dead("n2", 0.0)
    assert_even(Counter(place(tracker, SESSIONS, now=1.0).values()),
                {f"n{i}" for i in range(1, count + 1)} - {"n2"}, SESSIONS)


@pytest.mark.parametrize("count", [3, 5])
def test_a_node_joining_moves_no_session(count: int) -> None:
    tracker = discovered(count)
    sessions = place(tracker, SESSIONS)
    newcomer = discovered_node(200)
    tracker.join(newcomer)
    assert {n: tracker.home_for(node, 1.0) for n, node in sessions.items()} == sessions
    # The newcomer takes its even share of the sessions created from now on.
    assert_even(Counter(place(tracker, SESSIONS, now=1.0).values()),
                {node.id for node in tracker.nodes}, SESSIONS)


@pytest.mark.parametrize("count", [3, 5])
@pytest.mark.parametrize("how", ["leaves DNS", "dies"])
def test_a_node_leaving_moves_only_its_own_sessions(count: int, how: str) -> None:
    tracker = discovered(count)
    sessions = place(tracker, SESSIONS)
    gone = tracker.nodes[1].id
    if how == "dies":
        tracker.mark_dead(gone, 0.5)
    else:
        tracker.leave(gone)
    homes = {number: tracker.home_for(node, 1.0) for number, node in sessions.items()}
    moved = {number for number in sessions if homes[number] != sessions[number]}
    assert moved == {number for number, node in sessions.items() if node == gone}
    # ...and they spread evenly over the nodes that are left.
    assert_even(Counter(homes[number] for number in moved),
                {node.id for node in tracker.nodes} - {gone}, len(moved))


def test_discovered_nodes_are_ordered_by_id_whatever_the_join_order() -> None:
    one, two, three = discovered_node(1), discovered_node(2), discovered_node(3)
    first = NodeTracker([three, one], frozenset(), 10.0, discovered=True)
    first.join(two)
    second = NodeTracker([], frozenset(), 10.0, discovered=True)
    for node in (two, three, one):
        second.join(node)
    assert first.nodes == second.nodes == (one, two, three)
    # The `bak:` copy goes to the next node in that order on every app server...
    assert first.backup_nodes_after(one.id, 0.0) == [two.id, three.id]
    # ...so it is found where it went even after its node was drained here.
    first.leave(two.id)
    assert first.backup_nodes_after(two.id, 0.0)[0] == three.id
    assert first.backup_nodes_after("99_0_0_1", 0.0) == [one.id, three.id]


def test_join_and_leave_are_for_discovered_lists_only() -> None:
    tracker = static(2)
    with pytest.raises(ValueError, match="static node list"):
        tracker.join(discovered_node(1))
    with pytest.raises(ValueError, match="static node list"):
        tracker.leave("n1")


def test_empty_discovered_list_places_sessions_nowhere_until_a_node_joins() -> None:
    tracker = NodeTracker([], frozenset(), 10.0, discovered=True)
    assert tracker.choose_for_new(0.0) == NO_NODE
    assert tracker.home_for(NO_NODE, 0.0) == NO_NODE  # no churn while there is nothing
    assert tracker.statuses(0.0) == []
    assert tracker.backup_nodes_after(NO_NODE, 0.0) == []
    node = discovered_node(7)
    tracker.join(node)
    assert tracker.home_for(NO_NODE, 1.0) == node.id  # backed up at last
    assert [status.alive for status in tracker.statuses(1.0)] == [True]


def test_a_drained_node_is_not_tracked_as_dead_and_rejoins_alive() -> None:
    tracker = discovered(2)
    gone = tracker.nodes[0].id
    tracker.mark_dead(gone, 0.0)
    tracker.leave(gone)
    assert tracker.mark_dead(gone, 1.0) is False  # a late failure of a drained node
    assert not tracker.knows(gone) and not tracker.is_alive(gone, 1.0)
    tracker.join(discovered_node(1))
    assert tracker.is_alive(gone, 1.0)
