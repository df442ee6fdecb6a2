"""A proxy with TLS in the topology file: the launcher reads its `listen` list, checks every
port, probes the right listener, prints the https URL; the proxy finds the certificate
named in the file next to the file."""

from __future__ import annotations

import asyncio
import socket
import tomllib
from pathlib import Path

import pytest

from cluster.errors import PreflightError, TopologyError
from cluster.health import probe_for
from cluster.launcher import banner
from cluster.preflight import check_port_free
from cluster.topology import Address, parse_topology
from proxy.__main__ import load_settings
from proxy.server import ProxyServer
from proxy.settings import settings_from_mapping
from tests.support.certificates import TestCertificateAuthority

TLS_PROXY = """
[proxy.proxy]
listen = "127.0.0.1:8080,127.0.0.1:8443 ssl"
upstreams = "app1=127.0.0.1:8081"
ssl_certificate = "certs/proxy.pem"
ssl_certificate_key = "certs/proxy.key"
"""


def test_the_banner_prints_the_https_url_and_the_probed_status_page() -> None:
    topology = parse_topology(tomllib.loads(TLS_PROXY))
    proxy = topology.member("proxy")
    assert proxy.listen == Address("127.0.0.1", 8080) and not proxy.listen_is_ssl
    assert proxy.https == Address("127.0.0.1", 8443)
    assert proxy.addresses == (Address("127.0.0.1", 8080), Address("127.0.0.1", 8443))
    assert banner(topology, "sessionha")[0] == (
        "Open https://127.0.0.1:8443/test   (proxy status: http://127.0.0.1:8080/_proxy/status)"
    )
    ssl_only = parse_topology(
        tomllib.loads(
            TLS_PROXY.replace('"127.0.0.1:8080,127.0.0.1:8443 ssl"', '"0.0.0.0:8443 ssl"')
        )
    )
    assert ssl_only.member("proxy").listen_is_ssl
    assert banner(ssl_only, "sessionha")[0] == (
        "Open https://127.0.0.1:8443/test   (proxy status: https://127.0.0.1:8443/_proxy/status)"
    )


@pytest.mark.parametrize(
    ("listen", "message"),
    [
        ('"127.0.0.1:8080,127.0.0.1:8080 ssl"', "proxy lists port 8080 twice"),
        ('"127.0.0.1:8080,127.0.0.1:8081 ssl"', "both listen on port 8081"),
        ('"127.0.0.1:8080 tls"', "optionally followed by ssl; got '127.0.0.1:8080 tls'"),
    ],
)
def test_bad_listen_lists_are_one_line(listen: str, message: str) -> None:
    text = TLS_PROXY.replace('"127.0.0.1:8080,127.0.0.1:8443 ssl"', listen)
    text += '[appserver.app1]\nlisten = "127.0.0.1:8081"\n'
    with pytest.raises(TopologyError, match=message):
        parse_topology(tomllib.loads(text))


def test_preflight_checks_every_listener() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with socket.socket() as free:
            free.bind(("127.0.0.1", 0))
            other = free.getsockname()[1]
        text = TLS_PROXY.replace(
            '"127.0.0.1:8080,127.0.0.1:8443 ssl"', f'"127.0.0.1:{other},127.0.0.1:{port} ssl"'
        )
        member = parse_topology(tomllib.loads(text)).member("proxy")
        with pytest.raises(PreflightError, match=f"port {port} is already in use"):
            check_port_free(member)


async def test_the_proxy_reads_certificates_next_to_its_topology_and_an_ssl_only_one_is_probed(
    tmp_path: Path,
) -> None:
    ca = TestCertificateAuthority(tmp_path / "pki")
    issued = ca.issue("proxy")
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "proxy.pem").write_bytes(issued.certificate.read_bytes())
    (tmp_path / "certs" / "proxy.key").write_bytes(issued.key.read_bytes())
    config = tmp_path / "cluster.toml"
    config.write_text(TLS_PROXY.replace('"127.0.0.1:8080,127.0.0.1:8443 ssl"', '"127.0.0.1:0 ssl"'))
    settings = load_settings(["--config", str(config), "--name", "proxy"])
    assert settings.ssl_certificate == str(tmp_path / "certs" / "proxy.pem")
    assert settings.ssl_certificate_key == str(tmp_path / "certs" / "proxy.key")
    async with ProxyServer(settings) as proxy:
        text = config.read_text().replace("127.0.0.1:0 ssl", f"127.0.0.1:{proxy.port} ssl")
        member = parse_topology(tomllib.loads(text)).member("proxy")
        assert await asyncio.wait_for(probe_for(member)(), 5) == (True, "")
    assert (await asyncio.wait_for(probe_for(member)(), 5))[0] is False
    # From the environment, a relative path stays relative to the working directory.
    from_env = settings_from_mapping(
        {"upstreams": "a=127.0.0.1:1", "listen": "127.0.0.1:0 ssl"}
        | {"ssl_certificate": "c.pem", "ssl_certificate_key": "k.pem"}
    )
    assert from_env.ssl_certificate == "c.pem"
