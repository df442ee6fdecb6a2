"""The test.jsp page as HTML and JSON, rendered without a server."""

from __future__ import annotations

import json

from appserver.pages import DemoPage, SessionView
from appserver.views import fixed_local_address

PAGE = DemoPage(route="app1", css_url="/static/style.css?v=1", logo_url="/static/logo.png?v=2")


def view(**changes: object) -> SessionView:
    values: dict[str, object] = {
        "address": "127.0.0.1:8081",
        "session_id": "3F2504E04F8911D39A0C0305E82C3301-n2.app1",
        "new": False,
        "created": 0.0,
        "last_accessed": 60.0,
        "max_inactive_interval": 1800.0,
        "attributes": [("first", "1"), ("second", "2")],
        "action_url": "/test",
        "logout_url": "/logout",
    }
    return SessionView(**(values | changes))  # type: ignore[arg-type]


def test_the_page_shows_what_the_classic_test_jsp_shows() -> None:
    html = PAGE.html(view())
    assert "Server Info:" in html
    assert "127.0.0.1:8081" in html
    assert "3F2504E04F8911D39A0C0305E82C3301-n2.app1" in html
    assert "1970-01-01 00:00:00 UTC" in html and "1970-01-01 00:01:00 UTC" in html
    assert "Session Data:" in html
    assert html.index("first = 1") < html.index("second = 2")
    assert '<form class="add" method="POST" action="/test">' in html
    assert 'name="dataName"' in html and 'name="dataValue"' in html
    assert 'action="/logout"' in html
    assert '<link rel="stylesheet" href="/static/style.css?v=1">' in html


def test_every_user_string_is_escaped() -> None:
    html = PAGE.html(
        view(
            attributes=[("<script>alert(1)</script>", '"><img src=x onerror=alert(2)>')],
            action_url='/test;jsessionid="><script>',
        )
    )
    assert "<script>" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; = &quot;&gt;&lt;img src=x" in html


def test_non_string_values_print_as_json() -> None:
    html = PAGE.html(view(attributes=[("n", 3), ("l", ["a", None])]))
    assert "n = 3" in html and "l = [&quot;a&quot;, null]" in html


def test_json_is_the_documented_object_in_insertion_order() -> None:
    body = json.loads(PAGE.json(view(new=True)))
    assert body == {
        "server": "app1",
        "address": "127.0.0.1:8081",
        "session_id": "3F2504E04F8911D39A0C0305E82C3301-n2.app1",
        "new": True,
        "user": None,
        "attributes": {"first": "1", "second": "2"},
    }
    assert list(body["attributes"]) == ["first", "second"]


def test_the_listen_address_is_the_page_address_only_when_it_is_one_ip_and_port() -> None:
    assert fixed_local_address("127.0.0.1", 8081) == "127.0.0.1:8081"
    assert fixed_local_address("::1", 8081) == "[::1]:8081"
    for host, port in (("0.0.0.0", 8081), ("::", 8081), ("localhost", 8081), ("127.0.0.1", 0)):
        assert fixed_local_address(host, port) is None  # the connection's own address counts
