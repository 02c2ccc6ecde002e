"""Drift statistics with known values: PSI, binned KS, chi-square, confidence."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelgate.core.monitoring.drift import (
    KS_MIN_EFFECT,
    Histogram,
    ReferenceProfile,
    bin_counts,
    chi_square,
    confidence,
    ks_statistic,
    ks_threshold,
    psi,
)
from modelgate.core.serving import profiles as reference

counts = st.lists(st.integers(min_value=1, max_value=10_000), min_size=2, max_size=30)


@given(counts)
def test_psi_of_a_distribution_against_itself_is_zero(values: list[int]) -> None:
    assert psi(np.array(values), np.array(values)) == pytest.approx(0.0, abs=1e-12)
    # scale does not matter: shares are compared
    assert psi(np.array(values), 7 * np.array(values)) == pytest.approx(0.0, abs=1e-12)


@given(counts)
def test_psi_is_symmetric_and_never_negative(values: list[int]) -> None:
    other = np.array(values[::-1])
    forward, backward = psi(np.array(values), other), psi(other, np.array(values))
    assert forward >= 0.0
    assert forward == pytest.approx(backward)


def test_psi_known_value() -> None:
    # (0.5 - 0.25) ln 2 + (0.5 - 0.75) ln(2/3): the textbook two-bin case
    expected = 0.25 * math.log(2) - 0.25 * math.log(2 / 3)
    assert psi(np.array([1, 3]), np.array([1, 1])) == pytest.approx(expected)


def test_psi_of_an_empty_bin_is_finite() -> None:
    assert math.isfinite(psi(np.array([0, 10]), np.array([10, 0])))


def test_ks_known_value_and_identity() -> None:
    assert ks_statistic(np.array([1, 1, 1, 1]), np.array([1, 1, 1, 1])) == 0.0
    # all live mass in the first bin: the CDFs differ by 0.75 after it
    assert ks_statistic(np.array([1, 1, 1, 1]), np.array([4, 0, 0, 0])) == pytest.approx(0.75)
    assert ks_statistic(np.array([0, 0, 5]), np.array([5, 0, 0])) == pytest.approx(1.0)


def test_ks_threshold_is_the_critical_value_with_a_floor() -> None:
    assert ks_threshold(16_000, 100) == pytest.approx(1.949 * math.sqrt(16_100 / 1_600_000))
    assert ks_threshold(16_000, 1_000_000) == KS_MIN_EFFECT


def test_bin_counts_bins_like_numpy_histogram_plus_overflow() -> None:
    rng = np.random.default_rng(1)
    data = rng.normal(size=1_000)
    hist = Histogram.of(reference.histogram(data))
    binned = bin_counts(data, hist.edges)
    assert binned[0] == 0 and binned[-1] == 0
    assert np.array_equal(binned[1:-1], hist.counts)
    outside = bin_counts(np.array([hist.edges[0] - 1, hist.edges[-1] + 1]), hist.edges)
    assert outside[0] == 1 and outside[-1] == 1 and outside.sum() == 2


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_a_fresh_sample_of_the_reference_distribution_shows_no_drift(seed: int) -> None:
    rng = np.random.default_rng(seed)
    hist = Histogram.of(reference.histogram(rng.lognormal(10, 0.5, 20_000)))
    live = bin_counts(rng.lognormal(10, 0.5, 1_000), hist.edges)
    assert psi(hist.extended(), live) < 0.1
    assert ks_statistic(hist.extended(), live) < ks_threshold(20_000, 1_000)


def test_a_shifted_sample_drifts() -> None:
    rng = np.random.default_rng(2)
    hist = Histogram.of(reference.histogram(rng.normal(0, 1, 20_000)))
    live = bin_counts(rng.normal(1, 1, 500), hist.edges)
    assert psi(hist.extended(), live) > 0.2
    assert ks_statistic(hist.extended(), live) > ks_threshold(20_000, 500)


def test_chi_square_known_value() -> None:
    statistic, p_value = chi_square(np.array([0.5, 0.5]), np.array([60, 40]))
    assert statistic == pytest.approx(4.0)  # (10^2 + 10^2) / 50
    assert p_value == pytest.approx(0.0455, abs=0.005)  # exact: 0.0455
    same, p_same = chi_square(np.array([0.2, 0.3, 0.5]), np.array([20, 30, 50]))
    assert same == 0.0 and p_same > 0.99


def test_confidence_of_certain_and_uniform_answers() -> None:
    certain = confidence(np.array([[1.0, 0.0], [0.0, 1.0]]))
    assert certain.mean_top_probability == 1.0
    assert certain.mean_entropy == pytest.approx(0.0, abs=1e-9)
    assert certain.low_confidence_share == 0.0
    uniform = confidence(np.full((4, 3), 1 / 3))
    assert uniform.mean_top_probability == pytest.approx(1 / 3)
    assert uniform.mean_entropy == pytest.approx(1.0)
    assert uniform.low_confidence_share == 1.0
    mixed = confidence(np.array([[0.9, 0.1], [0.55, 0.45]]))
    assert mixed.low_confidence_share == 0.5


def test_profile_parses_the_reference_shape() -> None:
    rng = np.random.default_rng(3)
    features = np.stack([rng.integers(0, 3, 500), rng.normal(size=500)], axis=1)
    document = {
        "features": reference.feature_statistics(features, ["band", "score"], {"band"}),
        "outputs": {
            "probabilities": {
                "class": "yes",
                **reference.probability_statistics(rng.random(500)),
            },
            "label": reference.label_frequencies(rng.integers(0, 2, 500), ["no", "yes"]),
        },
    }
    profile = ReferenceProfile.parse(document)
    band, score = profile.features
    assert band.categorical and band.categories == (0.0, 1.0, 2.0)
    assert not score.categorical and score.count == 500
    assert profile.probabilities["probabilities"][1] == "yes"
    assert profile.labels["label"][0] == ("no", "yes")
