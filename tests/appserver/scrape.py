"""Reading a /metrics page as Prometheus does: prometheus_client's own parser, and the rules
every sessionha member's page keeps (names, types, histogram shape)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

# Prefixes a member may export: its own, and prometheus_client's standard collectors'.
ALLOWED_PREFIXES = ("sessionha_", "process_", "python_")


def parse(text: str) -> list[Metric]:
    return list(text_string_to_metric_families(text))


def sample_names(family: Metric) -> set[str]:
    """The series names a query may use for this family, samples or not: a counter's
    `_total`, a histogram's `_bucket`, `_sum` and `_count`, a gauge's own name."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    names = {family.name + suffix for suffix in suffixes.get(family.type, ("",))}
    return names | {sample.name for sample in family.samples}


def exported_names(families: Iterable[Metric]) -> set[str]:
    return set().union(*(sample_names(family) for family in families))


def check_exposition(families: list[Metric]) -> None:
    """Every family named with an allowed prefix, typed, counters ending in _total and
    histograms with cumulative buckets up to +Inf that agree with their _count."""
    assert families, "no metrics at all"
    for family in families:
        assert family.name.startswith(ALLOWED_PREFIXES), family.name
        assert family.type in ("counter", "gauge", "histogram", "info"), (family.name, family.type)
        assert family.documentation, family.name
        if family.type == "counter":
            # Every sample is the running total (`_created` only if a client library adds it).
            for sample in family.samples:
                assert sample.name in (family.name + "_total", family.name + "_created"), sample
        elif family.type == "histogram":
            check_histogram(family)
        else:
            assert all(sample.name == family.name for sample in family.samples), family.name
            assert not family.name.endswith("_total"), family.name


def check_histogram(family: Metric) -> None:
    assert family.name.endswith("_seconds"), family.name  # our histograms are all durations
    series: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
    counts: dict[tuple[tuple[str, str], ...], float] = {}
    sums = set()
    for sample in family.samples:
        labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
        if sample.name == family.name + "_bucket":
            series.setdefault(labels, []).append((float(sample.labels["le"]), sample.value))
        elif sample.name == family.name + "_count":
            counts[labels] = sample.value
        elif sample.name == family.name + "_sum":
            sums.add(labels)
        else:
            raise AssertionError(f"{sample.name} in histogram {family.name}")
    assert series, f"{family.name} has no buckets"
    for labels, buckets in series.items():
        bounds = [bound for bound, _ in buckets]
        values = [value for _, value in buckets]
        assert bounds == sorted(bounds) and bounds[-1] == float("inf"), (family.name, bounds)
        assert values == sorted(values), (family.name, values)  # cumulative
        assert counts[labels] == values[-1] and labels in sums, family.name


def value(families: Iterable[Metric], name: str, **labels: str) -> float:
    """The one sample called `name` whose labels include `labels`."""
    found = [sample.value for family in families for sample in family.samples
             if sample.name == name and labels.items() <= sample.labels.items()]
    assert len(found) == 1, (name, labels, found)
    return found[0]
