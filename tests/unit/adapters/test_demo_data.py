"""The demo data generator and reference statistics, without building any model.

Runs in the serving environment (no torch, skl2onnx or sentence-transformers), so it only
imports demo modules that keep those imports inside functions.
"""

from __future__ import annotations

import numpy as np
import pytest

from modelgate.core.serving import profiles as reference
from modelgate.demo import credit_risk

N_ROWS = 2_000


def test_generator_is_deterministic_for_a_seed() -> None:
    first = credit_risk.generate(N_ROWS, seed=123)
    second = credit_risk.generate(N_ROWS, seed=123)
    other = credit_risk.generate(N_ROWS, seed=124)

    np.testing.assert_array_equal(first.features, second.features)
    np.testing.assert_array_equal(first.labels, second.labels)
    assert not np.array_equal(first.features, other.features)


def test_generator_has_the_documented_columns_and_both_classes() -> None:
    data = credit_risk.generate(N_ROWS, seed=1)

    assert credit_risk.FEATURE_NAMES == (
        "age_band",
        "annual_income",
        "debt_to_income",
        "credit_utilization",
        "months_employed",
        "open_accounts",
        "delinquencies_2y",
        "loan_amount",
        "loan_term_months",
        "credit_history_years",
        "inquiries_6m",
        "home_ownership",
    )
    assert data.features.shape == (N_ROWS, 12)
    assert data.features.dtype == np.float32
    assert np.isfinite(data.features).all()
    assert set(np.unique(data.labels)) == {0, 1}
    assert 0.05 < data.labels.mean() < 0.4

    column = dict(zip(credit_risk.FEATURE_NAMES, data.features.T, strict=True))
    assert set(np.unique(column["age_band"])) <= set(range(6))
    assert set(np.unique(column["home_ownership"])) <= {0, 1, 2}


def test_split_is_a_partition() -> None:
    data = credit_risk.generate(N_ROWS, seed=2)
    train, validation = credit_risk.split(data, validation_fraction=0.25, seed=2)

    assert len(train) + len(validation) == N_ROWS
    assert len(validation) == N_ROWS // 4
    rows = np.concatenate([train.features, validation.features])
    assert np.unique(rows, axis=0).shape[0] == np.unique(data.features, axis=0).shape[0]


def test_column_statistics_quantiles_are_ordered_and_histogram_counts_every_row() -> None:
    values = np.random.default_rng(0).lognormal(size=1_001)
    stats = reference.column_statistics(values)

    quantiles = stats["quantiles"]["values"]
    assert stats["quantiles"]["levels"] == list(reference.QUANTILE_LEVELS)
    assert quantiles == sorted(quantiles)
    assert quantiles[0] == stats["min"]
    assert quantiles[-1] == stats["max"]
    assert sum(stats["histogram"]["counts"]) == stats["count"] == 1_001
    assert len(stats["histogram"]["edges"]) == reference.HISTOGRAM_BINS + 1


def test_feature_statistics_per_named_column_with_categories() -> None:
    data = credit_risk.generate(N_ROWS, seed=3)
    stats = reference.feature_statistics(
        data.features, credit_risk.FEATURE_NAMES, categorical=("age_band",)
    )

    assert list(stats) == list(credit_risk.FEATURE_NAMES)
    for column in stats.values():
        assert sum(column["histogram"]["counts"]) == N_ROWS
        assert column["quantiles"]["values"] == sorted(column["quantiles"]["values"])
    categories = stats["age_band"]["categories"]
    assert sum(categories["counts"]) == N_ROWS
    assert sum(categories["frequencies"]) == pytest.approx(1.0)
    assert "categories" not in stats["annual_income"]


def test_constant_column_still_has_a_valid_histogram() -> None:
    stats = reference.column_statistics(np.full(10, 3.0))

    edges = stats["histogram"]["edges"]
    assert edges == sorted(edges)
    assert len(set(edges)) == len(edges)
    assert sum(stats["histogram"]["counts"]) == 10


def test_probability_and_label_statistics() -> None:
    probabilities = np.array([0.0, 0.2, 0.5, 0.99, 1.0])
    stats = reference.probability_statistics(probabilities)
    assert stats["histogram"]["edges"][0] == 0.0
    assert stats["histogram"]["edges"][-1] == 1.0
    assert sum(stats["histogram"]["counts"]) == 5

    labels = reference.label_frequencies(np.array([0, 0, 0, 1]), ("repaid", "default"))
    assert labels == {
        "values": ["repaid", "default"],
        "counts": [3, 1],
        "frequencies": [0.75, 0.25],
    }
