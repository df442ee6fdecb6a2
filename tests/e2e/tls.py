"""A local cluster whose proxy also listens with TLS: a throw-away CA, the proxy's certificate
next to the topology file, and clients that trust exactly that CA (or that key)."""

from __future__ import annotations

import base64
import hashlib
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp

from tests.support.certificates import TestCertificateAuthority
from tests.support.ports import free_port

from .client import REQUEST_TIMEOUT
from .launch import LocalCluster, PortTakenError, topology_toml

PORT_ATTEMPTS = 3


@contextmanager
def tls_cluster(**appserver: str) -> Iterator[tuple[LocalCluster, TestCertificateAuthority]]:
    """`sessionha up` of the classic topology, the proxy on a plain and an ssl port;
    `appserver` adds keys to the [appserver] table. Torn down (leaks fail the test)."""
    clusters: list[LocalCluster] = []
    try:
        for attempt in range(PORT_ATTEMPTS):
            cluster = LocalCluster(tls_topology(**appserver))
            clusters.append(cluster)
            ca = TestCertificateAuthority(cluster.workdir / "pki")
            issued = ca.issue("proxy")
            certs = cluster.workdir / "certs"
            certs.mkdir()
            (certs / "proxy.pem").write_bytes(issued.certificate.read_bytes())
            (certs / "proxy.key").write_bytes(issued.key.read_bytes())
            try:
                cluster.start()
                break
            except PortTakenError:
                if attempt == PORT_ATTEMPTS - 1:
                    raise
        yield cluster, ca
    finally:
        leaks: list[str] = []
        for cluster in clusters:
            print(f"--- launcher output ({cluster.config}) ---\n{cluster.log_tail(200)}")
            leaks += cluster.close()
        assert not leaks, f"left behind: {leaks}"


def tls_topology(**appserver: str) -> str:
    text = topology_toml()
    ssl_port = free_port()
    text = re.sub(
        r'(\[proxy\.proxy\]\nlisten = "127\.0\.0\.1:\d+)"',
        rf'\1,127.0.0.1:{ssl_port} ssl"\n'
        'ssl_certificate = "certs/proxy.pem"\nssl_certificate_key = "certs/proxy.key"',
        text,
    )
    extra = "".join(f"{key} = {value}\n" for key, value in appserver.items())
    return text.replace("[appserver]\n", f"[appserver]\n{extra}", 1)


def https_url(cluster: LocalCluster, path: str) -> str:
    address = cluster.topology.member("proxy").https
    assert address is not None
    return f"https://{address}{path}"


def https_session(ca: TestCertificateAuthority) -> aiohttp.ClientSession:
    """Like client.http_session(), trusting only the test CA (host names checked)."""
    return aiohttp.ClientSession(
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=REQUEST_TIMEOUT,
        connector=aiohttp.TCPConnector(ssl=ca.client_context()),
    )


def spki_hash(certificate: Path) -> str:
    """base64 SHA-256 of the certificate's SubjectPublicKeyInfo: what Chromium's
    --ignore-certificate-errors-spki-list takes to trust exactly that key."""
    der = subprocess.run(
        ["openssl", "x509", "-in", str(certificate), "-noout", "-pubkey"],
        check=True,
        capture_output=True,
        timeout=30,
    ).stdout
    spki = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "DER"],
        input=der,
        check=True,
        capture_output=True,
        timeout=30,
    ).stdout
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()
