"""Fixtures for end-to-end tests: clusters started by the real launcher, always torn down."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from .launch import LocalCluster, PortTakenError, topology_toml

ClusterFactory = Callable[..., LocalCluster]
PORT_ATTEMPTS = 3


@pytest.fixture
def cluster_factory() -> Iterator[ClusterFactory]:
    """`cluster_factory(sticky=..., policy=..., roles=...)` starts one `sessionha up`;
    with `started=False` it only writes the topology. Every one is torn down after the test."""
    clusters: list[LocalCluster] = []

    def start(*, started: bool = True, **options: object) -> LocalCluster:
        if not started:  # only its topology file, for tests that run `sessionha up` themselves
            cluster = LocalCluster(topology_toml(**options))  # type: ignore[arg-type]
            clusters.append(cluster)
            cluster.config.write_text(cluster.toml, encoding="utf-8")
            return cluster
        for _ in range(PORT_ATTEMPTS - 1):
            cluster = LocalCluster(topology_toml(**options))  # type: ignore[arg-type]
            clusters.append(cluster)
            try:
                return cluster.start()
            except PortTakenError:
                continue  # a port chosen as free was taken meanwhile: choose others
        cluster = LocalCluster(topology_toml(**options))  # type: ignore[arg-type]
        clusters.append(cluster)
        return cluster.start()

    yield start
    leaks: list[str] = []
    for cluster in clusters:
        print(f"--- launcher output ({cluster.config}) ---\n{cluster.log_tail(200)}")
        leaks += cluster.close()
    assert not leaks, f"left behind: {leaks}"
