"""Settings: strict parsing from TOML member tables and from the environment."""

from __future__ import annotations

import subprocess
import sys

import pytest

from proxy.errors import SettingsError
from proxy.settings import (
    Listener,
    UpstreamSpec,
    inside,
    parse_size,
    settings_from_environ,
    settings_from_mapping,
    settings_from_toml,
)


def test_defaults_follow_nginx_names() -> None:
    settings = settings_from_mapping({"upstreams": "app1=127.0.0.1:8081"})
    assert settings.session_cookie_name == "JSESSIONID"
    assert (settings.max_fails, settings.fail_timeout, settings.keepalive) == (1, 10.0, 32)
    assert settings.client_max_body_size == 1024 * 1024
    assert settings.status_prefix == "/_proxy"
    assert settings.tries_limit == 1


def test_upstreams_with_nginx_weight() -> None:
    settings = settings_from_mapping(
        {"upstreams": "app1=127.0.0.1:8081 weight=3, app2=10.0.0.2:8082", "policy": "sticky"}
    )
    assert settings.upstreams == (
        UpstreamSpec("app1", "127.0.0.1", 8081, 3),
        UpstreamSpec("app2", "10.0.0.2", 8082, 1),
    )
    assert settings.tries_limit == 2


@pytest.mark.parametrize(
    ("text", "size"), [("1m", 1048576), ("10k", 10240), ("123", 123), ("2G", 2 << 30), (0, 0)]
)
def test_sizes_as_nginx_writes_them(text: object, size: int) -> None:
    assert parse_size("client_max_body_size", text) == size


@pytest.mark.parametrize(
    ("raw", "key", "value"),
    [
        ({"upstreams": "app1=127.0.0.1"}, "upstreams", "app1=127.0.0.1"),
        ({"upstreams": "app1=h:1 weight=0"}, "upstreams", "app1=h:1 weight=0"),
        ({"upstreams": "a=h:1,a=h:2"}, "upstreams", "a=h:1,a=h:2"),
        ({"upstreams": "a=h:1", "policy": "random"}, "policy", "random"),
        ({"upstreams": "a=h:1", "max_fails": "many"}, "max_fails", "many"),
        ({"upstreams": "a=h:1", "fail_timeout": "-1"}, "fail_timeout", "-1"),
        ({"upstreams": "a=h:1", "client_max_body_size": "1q"}, "client_max_body_size", "1q"),
        ({"upstreams": "a=h:1", "listen": "8080"}, "listen", "8080"),
        ({"upstreams": "a=h:1", "health_path": "health"}, "health_path", "health"),
        ({"upstreams": "a=h:1", "proxy_conect_timeout": 1}, "proxy_conect_timeout", 1),
        ({}, "upstreams", None),
    ],
)
def test_bad_values_name_key_and_value(raw: dict[str, object], key: str, value: object) -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_mapping(raw)
    assert caught.value.key == key
    assert caught.value.value == value
    assert key in str(caught.value)


def test_toml_member_merges_role_defaults_and_ignores_host() -> None:
    document = {
        "proxy": {
            "max_fails": 3,
            "proxy": {
                "listen": "127.0.0.1:8080",
                "host": "host1",
                "upstreams": "app1=127.0.0.1:8081,app2=127.0.0.1:8082",
                "policy": "sticky",
                "max_fails": 2,
            },
            "other": {"listen": "127.0.0.1:9090", "upstreams": "x=127.0.0.1:1"},
        }
    }
    settings = settings_from_toml(document, "proxy")
    assert settings.max_fails == 2
    assert settings.listen_port == 8080
    with pytest.raises(SettingsError, match="name"):
        settings_from_toml(document, "missing")


def test_environment_uses_upper_case_keys() -> None:
    settings = settings_from_environ(
        {"LISTEN": "127.0.0.1:9000", "UPSTREAMS": "a=127.0.0.1:1", "MAX_FAILS": "4", "PATH": "/x"}
    )
    assert (settings.listen_port, settings.max_fails) == (9000, 4)


def test_bad_setting_exits_2_with_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "proxy"],
        env={"UPSTREAMS": "app1=127.0.0.1:8081", "POLICY": "bogus"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "proxy: bad proxy setting policy='bogus': expected sticky or round_robin"
    ]


def test_set_real_ip_from_takes_cidrs_and_addresses() -> None:
    settings = settings_from_mapping(
        {
            "upstreams": "app1=127.0.0.1:8081",
            "set_real_ip_from": "10.0.0.0/8, 192.0.2.7,fd00::/8",
            "real_ip_header": "X-Real-IP",
        }
    )
    assert [str(network) for network in settings.set_real_ip_from] == [
        "10.0.0.0/8",
        "192.0.2.7/32",
        "fd00::/8",
    ]
    assert settings.real_ip_header == "X-Real-IP"
    assert settings_from_mapping({"upstreams": "a=127.0.0.1:1"}).set_real_ip_from == ()
    for bad in ("10.0.0.0/33", "example.test", "10.0.0.1-10.0.0.9"):
        with pytest.raises(SettingsError) as error:
            settings_from_mapping({"upstreams": "a=127.0.0.1:1", "set_real_ip_from": bad})
        assert error.value.key == "set_real_ip_from"
    networks = settings.set_real_ip_from
    assert inside("10.1.2.3", networks) and inside("::ffff:10.1.2.3", networks)
    assert inside("fd12::1", networks) and not inside("11.0.0.1", networks)
    assert not inside("unknown", networks)


def test_listen_is_a_list_of_addresses_each_optionally_ssl() -> None:
    tls = {"ssl_certificate": "/etc/proxy.pem", "ssl_certificate_key": "/etc/proxy.key"}
    settings = settings_from_environ(
        {"UPSTREAMS": "a=127.0.0.1:1", "LISTEN": "0.0.0.0:8080, [::]:8443 ssl"}
        | {key.upper(): value for key, value in tls.items()}
        | {"REDIRECT_TO_HTTPS": "true", "HSTS_MAX_AGE": "63072000", "SSL_PROTOCOLS": "TLSv1.3"}
    )
    assert settings.listeners == (Listener("0.0.0.0", 8080), Listener("::", 8443, ssl=True))
    assert (settings.listen_host, settings.listen_port) == ("0.0.0.0", 8080)
    assert settings.ssl_listeners == (Listener("::", 8443, ssl=True),)
    assert [str(listener) for listener in settings.listeners] == ["0.0.0.0:8080", "[::]:8443 ssl"]
    assert (settings.redirect_to_https, settings.hsts_max_age) == (True, 63072000)
    assert settings.ssl_protocols == ("TLSv1.3",)
    defaults = settings_from_mapping({"upstreams": "a=127.0.0.1:1"})
    assert defaults.listeners == (Listener("127.0.0.1", 8080),)
    assert defaults.ssl_protocols == ("TLSv1.2", "TLSv1.3") and defaults.ssl_ciphers
    assert (defaults.redirect_to_https, defaults.hsts_max_age) == (False, 0)
    toml = settings_from_mapping(
        {"upstreams": "a=h:1", "listen": "127.0.0.1:8443 ssl", "redirect_to_https": True} | tls
    )
    assert toml.redirect_to_https and toml.listen_port == 8443


_TLS = {"ssl_certificate": "c.pem", "ssl_certificate_key": "k.pem"}


@pytest.mark.parametrize(
    ("raw", "key", "why"),
    [
        ({"listen": "127.0.0.1:8443 ssl"}, "ssl_certificate", "required by listen"),
        ({"listen": "127.0.0.1:8443 ssl", "ssl_certificate": "c"}, "ssl_certificate_key", ""),
        ({"ssl_certificate_key": "k"}, "ssl_certificate", "required with ssl_certificate_key"),
        ({"listen": "h:1 ssl http2"} | _TLS, "listen", "the only option"),
        ({"listen": "h:1,h:1 ssl"} | _TLS, "listen", "port 1 appears twice"),
        ({"listen": "h:1,,h:2"}, "listen", "empty entry"),
        ({"listen": "h:70000 ssl"} | _TLS, "listen", "0..65535"),
        ({"redirect_to_https": True}, "redirect_to_https", "needs a listen entry with ssl"),
        ({"redirect_to_https": "perhaps"}, "redirect_to_https", "expected true or false"),
        ({"hsts_max_age": "-1"}, "hsts_max_age", "must be >= 0"),
        ({"hsts_max_age": "1y"}, "hsts_max_age", "whole number"),
        ({"ssl_protocols": "SSLv3"}, "ssl_protocols", "unknown protocol"),
        ({"ssl_protocols": "TLSv1.1 TLSv1.3"}, "ssl_protocols", "contiguous"),
        ({"ssl_ciphers": "NOTHING-AT-ALL"}, "ssl_ciphers", "selects no cipher"),
        ({"ssl_certificate": " "}, "ssl_certificate", "path of a PEM file"),
    ],
)
def test_bad_tls_settings_name_the_key(raw: dict[str, object], key: str, why: str) -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_mapping({"upstreams": "a=127.0.0.1:1"} | raw)
    assert caught.value.key == key
    assert why in caught.value.why
