"""The launcher's one error family: every message is one line meant for the user."""

from __future__ import annotations


class ClusterError(Exception):
    """Base of every error the launcher reports as one line, without a traceback."""


class TopologyError(ClusterError):
    """The TOML topology is unreadable or describes an impossible cluster."""


class PreflightError(ClusterError):
    """Something the cluster needs is missing before anything starts (binary, free port)."""


class MemberError(ClusterError):
    """A member could not be started, stopped or found."""


class ControlError(ClusterError):
    """The running launcher could not be reached or refused a command."""
