"""Throw-away certificates made with the `openssl` command line: a root CA, an intermediate,
and server certificates for 127.0.0.1, ::1 and localhost whose PEM file carries the chain
(leaf, then intermediate), so a client trusting only the root proves the chain is sent."""

from __future__ import annotations

import secrets
import shlex
import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

HOSTS = ("127.0.0.1", "::1", "localhost")

_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[root]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[intermediate]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""


@dataclass(frozen=True)
class ServerCertificate:
    """A certificate file (leaf and chain) and its key; `serial` as peercert shows it."""

    certificate: Path
    key: Path
    serial: int
    name: str


def openssl(command: str, *, cwd: Path) -> None:
    """Run `openssl COMMAND` (shell-style words; file names relative to `cwd`)."""
    binary = shutil.which("openssl")
    if binary is None:
        raise RuntimeError("the openssl command is not installed: apt-get install openssl")
    subprocess.run(
        [binary, *shlex.split(command)], cwd=cwd, check=True, capture_output=True, timeout=30
    )


# P-256: a key made in milliseconds, and cheap handshakes.
_NEW_KEY = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"


class TestCertificateAuthority:
    """A root and an intermediate CA in `directory`; `issue()` signs server certificates."""

    __test__ = False  # a helper, not a pytest class

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "openssl.cnf").write_text(_CONFIG)
        openssl(
            f"req -x509 {_NEW_KEY} -keyout root.key -out root.pem -days 2 -config openssl.cnf"
            f" -subj '/CN=sessionha test root' -extensions root -set_serial {_serial()}",
            cwd=directory,
        )
        self.root = directory / "root.pem"
        self._sign("intermediate", "root", "openssl.cnf", "intermediate", _serial())
        self.intermediate = directory / "intermediate.pem"

    def _sign(self, name: str, ca: str, extfile: str, section: str, serial: int) -> None:
        """NAME.key and NAME.pem (CN=sessionha test NAME), signed by CA.pem and CA.key."""
        openssl(
            f"req -new {_NEW_KEY} -keyout {name}.key -out {name}.csr -config openssl.cnf"
            f" -subj '/CN=sessionha test {name}'",
            cwd=self.directory,
        )
        openssl(
            f"x509 -req -in {name}.csr -CA {ca}.pem -CAkey {ca}.key -set_serial {serial}"
            f" -days 2 -extfile {extfile} -extensions {section} -out {name}.pem",
            cwd=self.directory,
        )

    def issue(self, name: str, hosts: tuple[str, ...] = HOSTS) -> ServerCertificate:
        """A server certificate for `hosts` (CN "sessionha test NAME"): NAME-chain.pem holds
        it and the intermediate, NAME.key its key."""
        d = self.directory
        names = [
            f"IP:{h}" if ":" in h or h.replace(".", "").isdigit() else f"DNS:{h}" for h in hosts
        ]
        extfile = d / f"{name}.ext"
        extfile.write_text(
            "[leaf]\nbasicConstraints = critical, CA:FALSE\n"
            "keyUsage = critical, digitalSignature\nextendedKeyUsage = serverAuth\n"
            "subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid:always\n"
            f"subjectAltName = {', '.join(names)}\n"
        )
        serial = _serial()
        self._sign(name, "intermediate", extfile.name, "leaf", serial)
        chain = d / f"{name}-chain.pem"
        chain.write_text((d / f"{name}.pem").read_text() + self.intermediate.read_text())
        return ServerCertificate(certificate=chain, key=d / f"{name}.key", serial=serial, name=name)

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts the root only (and checks the host name)."""
        return ssl.create_default_context(cafile=str(self.root))


def _serial() -> int:
    return secrets.randbits(63)


def broken_certificate(directory: Path) -> ServerCertificate:
    """A certificate file that looks like PEM but holds garbage, with a real key."""
    directory.mkdir(parents=True, exist_ok=True)
    key = directory / "broken.key"
    openssl(
        f"genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out {key.name}", cwd=directory
    )
    certificate = directory / "broken.pem"
    certificate.write_text(
        "-----BEGIN CERTIFICATE-----\nTm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"
    )
    return ServerCertificate(certificate=certificate, key=key, serial=0, name="broken")


def install(certificate: ServerCertificate, certificate_path: Path, key_path: Path) -> None:
    """Put a certificate and key at the paths a server reads, each replaced atomically (the
    way a deploy or certbot renews them)."""
    for source, target in (
        (certificate.certificate, certificate_path),
        (certificate.key, key_path),
    ):
        scratch = target.with_name(target.name + ".new")
        shutil.copyfile(source, scratch)
        scratch.replace(target)
