"""The concept-drift statistics against their definitions: AUC by counting pairs, the
Brier score, the calibration error, and the status thresholds."""

from __future__ import annotations

import numpy as np
import pytest

from modelgate.core.monitoring.classification_metrics import expected_calibration_error, roc_auc
from modelgate.core.monitoring.concept import concept_report


def test_auc_by_ranks_is_the_share_of_ordered_pairs_ties_counting_half() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 400)
    scores = np.round(labels * 0.2 + rng.random(400) * 0.8, 1)  # many ties
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert roc_auc(scores, labels) == pairs / (len(pos) * len(neg))
    assert roc_auc(scores, np.zeros(400, np.int64)) is None


def test_a_calibrated_score_has_a_small_calibration_error() -> None:
    rng = np.random.default_rng(5)
    scores = rng.random(20_000)
    labels = (rng.random(20_000) < scores).astype(np.int64)
    assert expected_calibration_error(scores, labels) < 0.02
    assert expected_calibration_error(np.full(100, 0.9), np.zeros(100, np.int64)) == pytest.approx(
        0.9
    )


def test_statuses() -> None:
    rng = np.random.default_rng(9)
    labels = rng.integers(0, 2, 1000)
    scores = np.clip(labels * 0.5 + rng.random(1000) * 0.5, 0, 1)
    predicted = (scores >= 0.5).astype(np.int64)
    validation = {"accuracy": float(np.mean(predicted == labels)), "auc": 0.9}
    kwargs = {"window_labels": 1000, "window_seconds": 60.0, "min_labels": 100}
    same = concept_report(predicted, scores, labels, validation, **kwargs)
    assert same.status in ("ok", "watch") and same.accuracy_drop == 0.0
    flipped = concept_report(predicted, scores, 1 - labels, validation, **kwargs)
    assert flipped.status == "drift" and flipped.drift
    few = concept_report(predicted[:10], scores[:10], labels[:10], validation, **kwargs)
    assert few.status == "insufficient data" and few.accuracy is None
    assert concept_report(predicted, scores, labels, None, **kwargs).status == "no reference"
