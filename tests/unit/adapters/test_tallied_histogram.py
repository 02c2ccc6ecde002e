"""TalliedHistogram against prometheus-client's Histogram: fed the same observations, a
scrape sees the same samples with the same values, to the last bit of the sum."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

from modelgate.observability.tallies import TalliedHistogram

BOUNDS = (0.0001, 0.001, 0.01, 0.1, 1.0, 10.0)
SIZES = (1, 2, 4, 8, 16, 32)

values = st.one_of(
    st.floats(min_value=0, max_value=100, allow_nan=False),
    st.sampled_from([*BOUNDS, *SIZES, 0.0, math.inf]),  # on a bound: its own bucket
    st.integers(min_value=0, max_value=1_000).map(float),
)
series = st.lists(st.tuples(st.sampled_from(["a", "b"]), values), max_size=60)


def _pair(
    buckets: tuple[float, ...],
) -> tuple[CollectorRegistry, Histogram, CollectorRegistry, TalliedHistogram]:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    reference = Histogram("m_seconds", "help", ("model",), buckets=buckets, registry=theirs)
    tallied = TalliedHistogram("m_seconds", "help", ("model",), buckets=buckets, registry=ours)
    return theirs, reference, ours, tallied


def _samples(registry: CollectorRegistry) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, s.labels, s.value)
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")  # when each child was made: differs by design
    ]


def _without_created(text: bytes) -> list[bytes]:
    return [line for line in text.splitlines() if b"_created" not in line]


@given(series, st.sampled_from([BOUNDS, SIZES]))
def test_a_scrape_sees_what_prometheus_client_would_show(
    observed: list[tuple[str, float]], buckets: tuple[float, ...]
) -> None:
    theirs, reference, ours, tallied = _pair(buckets)
    for model, value in observed:
        reference.labels(model).observe(value)
        tallied.labels(model).observe(value)
    assert _samples(ours) == _samples(theirs)
    assert _without_created(generate_latest(ours)) == _without_created(generate_latest(theirs))
    assert _without_created(openmetrics_latest(ours)) == _without_created(
        openmetrics_latest(theirs)
    )


def test_nan_is_summed_but_counted_in_no_bucket_as_prometheus_client_does() -> None:
    theirs, reference, ours, tallied = _pair(BOUNDS)
    for histogram in (reference, tallied):
        histogram.labels("a").observe(0.5)
        histogram.labels("a").observe(math.nan)
    mine, reference_samples = _samples(ours), _samples(theirs)
    assert [(n, labels) for n, labels, _ in mine] == [(n, lb) for n, lb, _ in reference_samples]
    assert ours.get_sample_value("m_seconds_count", {"model": "a"}) == 1
    assert math.isnan(ours.get_sample_value("m_seconds_sum", {"model": "a"}) or 0.0)


def test_a_child_exists_from_its_first_labels_and_has_a_created_time() -> None:
    _, _, ours, tallied = _pair(BOUNDS)
    tallied.labels("a")
    assert ours.get_sample_value("m_seconds_count", {"model": "a"}) == 0
    assert (ours.get_sample_value("m_seconds_created", {"model": "a"}) or 0) > 0


def test_its_names_are_claimed_on_the_registry() -> None:
    _, _, ours, _ = _pair(BOUNDS)
    with pytest.raises(ValueError, match="Duplicated"):
        Histogram("m_seconds", "help", registry=ours)


def test_labels_and_buckets_are_checked() -> None:
    _, _, _, tallied = _pair(BOUNDS)
    with pytest.raises(ValueError, match="expected labels"):
        tallied.labels("a", "b")
    with pytest.raises(ValueError, match="sorted"):
        TalliedHistogram("x", "help", (), buckets=(1.0, 0.5), registry=CollectorRegistry())
