"""Hop-by-hop headers, both directions: the fixed ones, and Connection with the headers
it names (RFC 9110 7.6.1). Pure."""

from __future__ import annotations

from collections.abc import Sequence

HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"te", b"trailer", b"transfer-encoding", b"upgrade"}
)


def connection_tokens(values: Sequence[bytes]) -> set[bytes]:
    tokens: set[bytes] = set()
    for value in values:
        for token in value.split(b","):
            token = token.strip().lower()
            if token:
                tokens.add(token)
    return tokens


# Connection tokens that name no header of their own.
PLAIN_TOKENS = frozenset({b"close", b"keep-alive", b"upgrade"})
# What a Connection header may never remove: the framing is the proxy's (it decided
# how the body ends) and Host is not hop-by-hop (RFC 9110 7.6.1). Naming one of them
# once let a client strip Content-Length while its body still went upstream: smuggling.
PROTECTED = frozenset({b"content-length", b"transfer-encoding", b"host"})
