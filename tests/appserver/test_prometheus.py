"""GET /metrics of a real `python -m appserver`, read with prometheus_client's own parser:
names with one prefix, types as Prometheus expects them, histograms instead of quantiles,
memcached's side per node."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .observed import Observed, observe
from .scrape import check_exposition, value


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    yield from observe(tmp_path_factory)


def test_every_family_has_the_prefix_and_the_shape_its_type_promises(observed: Observed) -> None:
    check_exposition(observed.metrics)
    types = {family.name: family.type for family in observed.metrics}
    assert not [name for name in types if name.startswith(("appserver_", "sessionstore_"))]
    assert not [name for name, kind in types.items() if kind == "summary" or "quantile" in name]
    for histogram in ("sessionha_appserver_http_request_duration_seconds",
                      "sessionha_sessionstore_backup_latency_seconds",
                      "sessionha_sessionstore_load_latency_seconds"):
        assert types[histogram] == "histogram", histogram
    # The standard ones every exporter has, for the same dashboards.
    for standard in ("process_cpu_seconds", "process_resident_memory_bytes",
                     "process_open_fds", "python_info"):
        assert standard in types, standard


def test_build_info_names_the_version_and_the_member(observed: Observed) -> None:
    [sample] = [s for f in observed.metrics if f.name == "sessionha_build_info" for s in f.samples]
    assert sample.value == 1 and sample.labels["member"] == "appserver"
    assert sample.labels["version"]


def test_requests_are_counted_by_status_by_class_and_in_the_duration_histogram(
    observed: Observed,
) -> None:
    families = observed.metrics
    total = "sessionha_appserver_http_requests_total"
    for key, count in observed.requests.items():
        method, status = key.split()
        assert value(families, total, method=method, status=status) == count
    answered = sum(observed.requests.values())  # the scrape itself is counted after it
    responses = "sessionha_appserver_http_responses_total"
    assert value(families, responses, code="2xx") == answered - 1
    assert value(families, responses, code="4xx") == 1
    duration = "sessionha_appserver_http_request_duration_seconds"
    assert value(families, duration + "_count") == answered
    assert value(families, duration + "_bucket", le="+Inf") == answered
    assert value(families, duration + "_bucket", le="10.0") == answered
    assert 0 < value(families, duration + "_sum") < answered * 10


def test_backups_are_a_latency_histogram(observed: Observed) -> None:
    families = observed.metrics
    written = value(families, "sessionha_sessionstore_backups_written_total")
    assert written >= 1
    latency = "sessionha_sessionstore_backup_latency_seconds"
    assert value(families, latency + "_count") == written
    assert value(families, latency + "_bucket", le="2.5") == written  # loopback: fast


def test_each_memcached_node_shows_its_state_items_and_memory(observed: Observed) -> None:
    families = observed.metrics
    node = "sessionha_sessionstore_node"
    for name, memcached in zip(("n1", "n2"), observed.nodes, strict=True):
        assert value(families, node + "_up", node=name) == 1
        assert value(families, node + "_evicting", node=name) == 0
        assert value(families, node + "_evictions_total", node=name) == 0
        assert value(families, node + "_limit_bytes", node=name) == memcached.memory_mb * 1024**2
        assert value(families, node + "_backups_failed_total", node=name) == 0
    # app1's one session lives on n2 (n1 is its failover node), with data.
    assert value(families, node + "_items", node="n2") >= 1
    assert value(families, node + "_bytes", node="n2") > 0
    assert value(families, node + "_items", node="n1") == 0
