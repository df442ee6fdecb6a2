"""dns: upstreams, the pure parts: settings, address sets, health answers, routes, states."""

from __future__ import annotations

import pytest

from proxy.balancer import Balancer
from proxy.errors import SettingsError
from proxy.health import EventLog, UpstreamHealth
from proxy.membership import (
    AddressChange,
    Membership,
    diff_addresses,
    health_answer_complete,
    parse_health_answer,
    route_from_health_body,
)
from proxy.settings import (
    DnsTarget,
    UpstreamSpec,
    settings_from_environ,
    settings_from_mapping,
)

# -- settings ------------------------------------------------------------------------


def test_a_dns_name_replaces_the_static_list() -> None:
    settings = settings_from_environ({"UPSTREAMS": "dns:tasks.app:8000", "RESOLVER_VALID": "2"})
    assert settings.discovery == DnsTarget("tasks.app", 8000)
    assert settings.discovery.label == "dns:tasks.app:8000"
    assert settings.upstreams == ()
    assert settings.resolver_valid == 2.0


def test_resolver_valid_defaults_to_five_seconds_and_static_lists_have_no_discovery() -> None:
    assert settings_from_mapping({"upstreams": "dns:localhost:1"}).resolver_valid == 5.0
    static = settings_from_mapping({"upstreams": "app1=127.0.0.1:8081"})
    assert static.discovery is None
    assert static.tries_limit == 1


def test_tries_follow_the_number_of_discovered_upstreams() -> None:
    settings = settings_from_mapping({"upstreams": "dns:app:80"})
    assert (settings.tries_limit, settings.tries_for(3)) == (1, 3)
    limited = settings_from_mapping({"upstreams": "dns:app:80", "next_upstream_tries": 2})
    assert (limited.tries_for(1), limited.tries_for(5)) == (1, 2)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"upstreams": "dns:tasks.app"}, "upstreams"),
        ({"upstreams": "dns::8000"}, "upstreams"),
        ({"upstreams": "dns:tasks.app:0"}, "upstreams"),
        ({"upstreams": "dns:tasks.app:http"}, "upstreams"),
        ({"upstreams": "dns:tasks.app:8000,app2=h:1"}, "upstreams"),
        ({"upstreams": "dns:tasks.app:8000 weight=2"}, "upstreams"),
        ({"upstreams": "dns:bad..name:8000"}, "upstreams"),
        ({"upstreams": "dns:-bad.name:8000"}, "upstreams"),
        ({"upstreams": "dns:a/b:8000"}, "upstreams"),
        ({"upstreams": "dns:app:80", "resolver_valid": "0"}, "resolver_valid"),
        ({"upstreams": "dns:app:80", "resolver_valid": "-1"}, "resolver_valid"),
        ({"upstreams": "dns:app:80", "resolver_valid": "soon"}, "resolver_valid"),
        ({"upstreams": "dns:app:80", "resolver_valid": "nan"}, "resolver_valid"),
        ({"upstreams": "dns:app:80", "resolver_valid": "inf"}, "resolver_valid"),
        ({"upstreams": "dns:app:80", "resolver_valid": True}, "resolver_valid"),
        ({"upstreams": "dns:app:80", "resolver_valid": 7200}, "resolver_valid"),
        ({"upstreams": "dns:app:80", "health_interval": 0}, "health_interval"),
    ],
)
def test_bad_dns_settings_name_the_key(raw: dict[str, object], key: str) -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_mapping(raw)
    assert caught.value.key == key


# -- addresses -----------------------------------------------------------------------


def test_an_upstream_spec_writes_its_address_as_host_port() -> None:
    assert UpstreamSpec("app1", "fd00::5", 8000).address == "[fd00::5]:8000"
    assert UpstreamSpec("app1", "10.0.0.1", 8000).address == "10.0.0.1:8000"


def test_diff_of_address_sets() -> None:
    change = diff_addresses(["a", "b", "c"], ["c", "d", "a", "e"])
    assert change == AddressChange(added=("d", "e"), removed=("b",))
    assert not diff_addresses(["a"], ["a"])


# -- health answers ------------------------------------------------------------------

JSON_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"


def test_route_comes_from_the_json_body_of_a_sized_answer() -> None:
    body = b'{"status": "ok", "route": "app-7f3", "nodes": []}'
    raw = JSON_HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body
    assert health_answer_complete(raw)
    assert not health_answer_complete(raw[:-1])
    answer = parse_health_answer(raw)
    assert (answer.status, answer.route) == (200, "app-7f3")


def test_route_from_a_chunked_answer_and_from_an_answer_closed_by_the_server() -> None:
    chunked = (
        JSON_HEAD
        + b'Transfer-Encoding: chunked\r\n\r\n9\r\n{"route":\r\n8\r\n "app2"}\r\n0\r\n\r\n'
    )
    assert health_answer_complete(chunked)
    assert parse_health_answer(chunked).route == "app2"
    assert not health_answer_complete(chunked[:-5])
    closed = JSON_HEAD + b'\r\n{"route": "app3"}'
    assert not health_answer_complete(closed)  # the caller reads until close
    assert parse_health_answer(closed).route == "app3"


def test_route_header_is_accepted_when_the_body_has_none() -> None:
    raw = b"HTTP/1.1 200 OK\r\nX-Route: app9\r\nContent-Length: 2\r\n\r\nok"
    assert parse_health_answer(raw).route == "app9"


@pytest.mark.parametrize(
    "body",
    [b"", b"ok", b"[]", b'{"route": 5}', b'{"route": "a b"}', b'{"route": ""}', b"\xff\xfe"],
)
def test_no_usable_route_means_none(body: bytes) -> None:
    assert route_from_health_body(body) is None


def test_answers_that_are_not_http() -> None:
    assert parse_health_answer(b"").status is None
    assert parse_health_answer(b"SSH-2.0-OpenSSH\r\n\r\n").status is None
    assert parse_health_answer(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n").status == 503


# -- membership: names and routes ----------------------------------------------------


def test_new_addresses_are_named_by_address_until_their_route_is_known() -> None:
    members = Membership(8000)
    assert members.resolved(["10.0.0.1", "10.0.0.2"]).added == ("10.0.0.1", "10.0.0.2")
    assert members.names() == {"10.0.0.1": "10.0.0.1:8000", "10.0.0.2": "10.0.0.2:8000"}
    members.learned("10.0.0.1", "app1")
    assert members.names()["10.0.0.1"] == "app1"
    assert members.rivals() == {}


def test_the_newest_address_keeps_a_route_two_of_them_claim() -> None:
    members = Membership(8000)
    members.resolved(["10.0.0.1"])
    members.learned("10.0.0.1", "app1")
    members.resolved(["10.0.0.1", "10.0.0.2"])
    members.learned("10.0.0.2", "app1")
    assert members.names() == {"10.0.0.1": "10.0.0.1:8000", "10.0.0.2": "app1"}
    assert members.rivals()["10.0.0.1"].host == "10.0.0.2"
    # The newer one leaves: while it drains the live one gets the route back.
    assert members.resolved(["10.0.0.1"]).removed == ("10.0.0.2",)
    assert members.names() == {"10.0.0.1": "app1", "10.0.0.2": "10.0.0.2:8000"}
    assert members.rivals()["10.0.0.2"].host == "10.0.0.1"


def test_a_gone_address_keeps_its_name_while_it_drains_then_is_forgotten() -> None:
    members = Membership(8000)
    members.resolved(["10.0.0.1", "10.0.0.2"])
    members.learned("10.0.0.2", "app2")
    members.resolved(["10.0.0.1"])
    assert members.members["10.0.0.2"].gone
    assert members.names()["10.0.0.2"] == "app2"
    assert members.live == ["10.0.0.1"]
    members.forget("10.0.0.2")
    assert list(members.members) == ["10.0.0.1"]


def test_an_address_back_before_its_drain_ends_is_new_again() -> None:
    members = Membership(8000)
    members.resolved(["10.0.0.1"])
    members.learned("10.0.0.1", "app1")
    members.resolved(["10.0.0.9"])
    change = members.resolved(["10.0.0.9", "10.0.0.1"])
    assert change.added == ("10.0.0.1",)
    member = members.members["10.0.0.1"]
    assert (member.gone, member.route) == (False, None)  # its route is learned again
    assert member.seq > members.members["10.0.0.9"].seq



# -- health of a discovered upstream ---------------------------------------------------


def discovered(log: EventLog) -> UpstreamHealth:
    return UpstreamHealth(
        "10.0.0.1:8000", log=log, max_fails=1, fail_timeout=10, fall=3, rise=2, admitted=False
    )


def test_a_new_address_is_checking_until_one_check_passes() -> None:
    log = EventLog()
    health = discovered(log)
    assert health.state(1.0) == "checking" and not health.available(1.0)
    health.record_check(2.0, False, "connection refused")
    assert health.state(2.0) == "checking"
    assert health.reason == "checking: connection refused"
    health.record_check(3.0, True)
    assert health.state(3.0) == "up" and health.available(3.0)
    assert [(e.change, e.reason) for e in log] == [("UP", "health check passed (new address)")]
    # From now on fall/rise as for any upstream.
    for at in (4.0, 5.0, 6.0):
        health.record_check(at, False, "timed out")
    assert health.state(6.0) == "down"


def test_holds_take_it_out_and_are_logged() -> None:
    log = EventLog()
    health = discovered(log)
    health.record_check(1.0, True)
    health.hold(2.0, "conflict", "route app1 is claimed by newer 10.0.0.2:8000")
    assert health.state(2.0) == "conflict" and not health.available(2.0)
    health.hold(3.0, None)
    assert health.available(3.0)
    health.rename(4.0, "app1", "10.0.0.1:8000 carries route app1")
    health.hold(5.0, "draining", "gone from dns:app:8000")
    assert health.state(5.0) == "draining" and not health.available(5.0)
    assert [(e.upstream, e.change) for e in log][1:] == [
        ("10.0.0.1:8000", "CONFLICT"),
        ("app1", "ROUTE"),
        ("app1", "DRAINING"),
    ]


def test_static_upstreams_start_up_as_before() -> None:
    health = UpstreamHealth("app1", log=EventLog(), max_fails=1, fail_timeout=10, fall=1, rise=1)
    assert health.admitted and health.state(0.0) == "up" and health.reason == ""


# -- balancer membership ---------------------------------------------------------------


def test_peers_join_and_leave_the_round_robin() -> None:
    log = EventLog()
    healths = {
        name: UpstreamHealth(name, log=log, max_fails=1, fail_timeout=10, fall=1, rise=1)
        for name in ("app1", "app2")
    }
    balancer = Balancer([], policy="sticky", health_of=healths.__getitem__)
    assert balancer.choose() is None
    balancer.add("app1")
    balancer.add("app2")
    balancer.add("app2")
    assert len(balancer) == 2 and "app2" in balancer
    assert {balancer.choose(), balancer.choose()} == {"app1", "app2"}
    assert balancer.choose("app2") == "app2"
    balancer.remove("app2")
    balancer.remove("app2")
    assert [balancer.choose("app2") for _ in range(3)] == ["app1"] * 3
