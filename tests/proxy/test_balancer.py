"""Upstream choice: smooth weighted round robin, sticky routes, their fallback, and the
last resort when every upstream is out (real health state machines, injected time)."""

from __future__ import annotations

from proxy.balancer import Balancer, route_of_request, session_id_from_path
from proxy.health import EventLog, UpstreamHealth
from proxy.settings import Policy


def make(
    names: dict[str, int], policy: Policy = "round_robin"
) -> tuple[Balancer, dict[str, UpstreamHealth]]:
    log = EventLog()
    healths = {
        name: UpstreamHealth(name, log=log, max_fails=1, fail_timeout=10.0, fall=1, rise=2)
        for name in names
    }
    balancer = Balancer(list(names.items()), policy=policy, health_of=healths.__getitem__)
    return balancer, healths


def test_smooth_weighted_round_robin_matches_nginx() -> None:
    # nginx's documented example: weights 5, 1, 1 give a a b a c a a.
    balancer, _ = make({"a": 5, "b": 1, "c": 1})
    assert [balancer.choose() for _ in range(7)] == ["a", "a", "b", "a", "c", "a", "a"]


def test_equal_weights_alternate_and_skip_excluded() -> None:
    balancer, _ = make({"app1": 1, "app2": 1})
    assert [balancer.choose() for _ in range(4)] == ["app1", "app2", "app1", "app2"]
    assert balancer.choose(exclude=("app1",)) == "app2"
    assert balancer.choose(exclude=("app1", "app2")) is None


def test_sticky_route_wins_while_its_upstream_is_up() -> None:
    balancer, healths = make({"app1": 1, "app2": 1}, policy="sticky")
    assert [balancer.choose("app2") for _ in range(3)] == ["app2"] * 3
    healths["app2"].record_check(1.0, False, "connection refused")  # fall = 1
    assert balancer.choose("app2") == "app1"  # the failover moment
    assert balancer.choose("unknown") == "app1"


def test_one_upstream_is_chosen_as_the_general_rules_would() -> None:
    balancer, healths = make({"app1": 1}, policy="sticky")
    assert [balancer.choose(route) for route in (None, "app1", "app9")] == ["app1"] * 3
    assert balancer.choose(exclude=("app1",)) is None
    healths["app1"].record_failure(100.0, "connection refused")  # out until 110
    assert balancer.choose() == "app1"  # the fallback
    healths["app1"].record_check(100.5, False, "connection refused")
    assert balancer.choose() is None
    healths["app2"] = UpstreamHealth(
        "app2", log=EventLog(), max_fails=1, fail_timeout=10.0, fall=1, rise=2
    )
    balancer.add("app2")
    assert [balancer.choose() for _ in range(2)] == ["app2", "app2"]
    balancer.remove("app1")
    assert balancer.choose() == "app2"
    balancer.remove("app2")
    assert balancer.choose() is None


def test_round_robin_policy_ignores_routes() -> None:
    balancer, _ = make({"app1": 1, "app2": 1})
    assert [balancer.choose("app2") for _ in range(2)] == ["app1", "app2"]


def test_all_out_for_passive_failures_tries_the_one_back_soonest() -> None:
    balancer, healths = make({"app1": 1, "app2": 1, "app3": 1})
    healths["app2"].record_failure(100.0, "connection refused")  # out until 110
    healths["app1"].record_failure(101.0, "connection refused")  # out until 111
    healths["app3"].record_failure(102.0, "connection refused")  # out until 112
    assert [balancer.choose() for _ in range(2)] == ["app2", "app2"]
    assert balancer.choose(exclude=("app2",)) == "app1"
    assert balancer.choose(exclude=("app2", "app1", "app3")) is None
    # One usable upstream is always preferred to the fallback.
    healths["app3"].record_check(103.0, True)
    healths["app3"].record_check(104.0, True)
    assert balancer.choose() == "app3"


def test_no_fallback_to_an_upstream_the_active_checker_knows_dead() -> None:
    balancer, healths = make({"app1": 1, "app2": 1})
    healths["app1"].record_failure(100.0, "connection refused")
    healths["app1"].record_check(100.5, False, "connection refused")  # fall = 1
    assert balancer.choose() == "app2"
    healths["app2"].record_failure(101.0, "connection refused")
    assert balancer.choose() == "app2"  # passive only: still tried
    healths["app2"].record_check(101.5, False, "connection refused")
    assert balancer.choose() is None


def test_route_from_cookie_then_path_parameter() -> None:
    cookie = "theme=dark; JSESSIONID=3F2504E04F8911D39A0C0305E82C3301-n2.app1"
    assert route_of_request("/test", [cookie], "JSESSIONID") == "app1"
    assert route_of_request("/test;jsessionid=ABC-n1.app2?x=1", [], "JSESSIONID") == "app2"
    assert route_of_request("/test", ["JSESSIONID=noroute"], "JSESSIONID") is None
    assert route_of_request("/test", ["OTHER=x.app1"], "JSESSIONID") is None
    assert session_id_from_path("/a;jsessionid=ID.app1;x=y/b", "JSESSIONID") == "ID.app1"
