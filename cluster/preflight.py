"""Checks made before anything starts: the memcached binary and free ports."""

from __future__ import annotations

import errno
import shutil
import socket

from .errors import PreflightError
from .topology import Member, Topology

INSTALL_MEMCACHED = "sudo apt-get install memcached"


def find_memcached() -> str:
    """Path of the memcached binary, or one line saying how to install it."""
    binary = shutil.which("memcached")
    if binary is None:
        raise PreflightError(f"memcached is not installed (install it with: {INSTALL_MEMCACHED})")
    return binary


def check_port_free(member: Member, config: str = "the topology") -> None:
    """A bind attempt on each of the member's addresses, as the member itself will make
    (SO_REUSEADDR, like the servers)."""
    for address in member.addresses:
        family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((address.host, address.port))
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    raise PreflightError(
                        f"port {address.port} is already in use "
                        f"({member.name} wants to listen on {address}): stop what holds it, "
                        f"or give {member.name} another port in {config}"
                    ) from None
                raise PreflightError(
                    f"{member.name} cannot listen on {address}: {error.strerror}"
                ) from None


def preflight(topology: Topology, config: str = "the topology") -> str | None:
    """Everything `up` checks first; returns the memcached binary when one is needed.
    `config` names the topology file in the advice."""
    binary = find_memcached() if topology.of_role("memcached") else None
    for member in topology.members:
        check_port_free(member, config)
    return binary
