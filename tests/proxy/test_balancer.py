"""Upstream choice: smooth weighted round robin, sticky routes and their fallback."""

from __future__ import annotations

from proxy.balancer import Balancer, route_of_request, session_id_from_path


def test_smooth_weighted_round_robin_matches_nginx() -> None:
    # nginx's documented example: weights 5, 1, 1 give a a b a c a a.
    balancer = Balancer([("a", 5), ("b", 1), ("c", 1)], policy="round_robin", available=bool)
    assert [balancer.choose() for _ in range(7)] == ["a", "a", "b", "a", "c", "a", "a"]


def test_equal_weights_alternate_and_skip_excluded() -> None:
    balancer = Balancer([("app1", 1), ("app2", 1)], policy="round_robin", available=bool)
    assert [balancer.choose() for _ in range(4)] == ["app1", "app2", "app1", "app2"]
    assert balancer.choose(exclude=("app1",)) == "app2"
    assert balancer.choose(exclude=("app1", "app2")) is None


def test_sticky_route_wins_while_its_upstream_is_up() -> None:
    down: set[str] = set()
    balancer = Balancer(
        [("app1", 1), ("app2", 1)], policy="sticky", available=lambda name: name not in down
    )
    assert [balancer.choose("app2") for _ in range(3)] == ["app2"] * 3
    down.add("app2")
    assert balancer.choose("app2") == "app1"  # the failover moment
    assert balancer.choose("unknown") == "app1"


def test_round_robin_policy_ignores_routes() -> None:
    balancer = Balancer([("app1", 1), ("app2", 1)], policy="round_robin", available=bool)
    assert [balancer.choose("app2") for _ in range(2)] == ["app1", "app2"]


def test_route_from_cookie_then_path_parameter() -> None:
    cookie = "theme=dark; JSESSIONID=3F2504E04F8911D39A0C0305E82C3301-n2.app1"
    assert route_of_request("/test", [cookie], "JSESSIONID") == "app1"
    assert route_of_request("/test;jsessionid=ABC-n1.app2?x=1", [], "JSESSIONID") == "app2"
    assert route_of_request("/test", ["JSESSIONID=noroute"], "JSESSIONID") is None
    assert route_of_request("/test", ["OTHER=x.app1"], "JSESSIONID") is None
    assert session_id_from_path("/a;jsessionid=ID.app1;x=y/b", "JSESSIONID") == "ID.app1"
