"""Tests of the proxy: pure cores without sockets, forwarding with real upstreams on loopback."""
