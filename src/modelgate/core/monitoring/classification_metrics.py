"""How well a binary or multi-class model's predictions match their labels: the figures
concept drift (:mod:`~modelgate.core.monitoring.concept`) compares with the validation set's.

The statistics are plain numpy (no scikit-learn at serving time):

- accuracy: the share of labelled rows whose predicted class is the label;
- ROC AUC (binary models): the Mann-Whitney statistic from average ranks (ties share
  their rank), and its standard error by Hanley and McNeil (1982);
- calibration (binary models): the Brier score (mean squared difference between the
  score and the 0/1 label) and the expected calibration error over :data:`ECE_BINS`
  equal-width bins of the score.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "ECE_BINS",
    "accuracy",
    "auc_standard_error",
    "brier_score",
    "expected_calibration_error",
    "roc_auc",
]

#: equal-width score bins of the expected calibration error
ECE_BINS = 10

Array = np.ndarray[Any, Any]


def accuracy(predicted: Array, labels: Array) -> float:
    return float(np.mean(predicted == labels))


def roc_auc(scores: Array, labels: Array) -> float | None:
    """The area under the ROC curve of ``scores`` for the 0/1 ``labels`` (ties count a
    half); None when one class is absent."""
    positive = labels == 1
    n_pos = int(positive.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ordered = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    # average ranks (1-based) over runs of equal scores
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(ordered)]
    average = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(average, ends - starts)
    rank_sum = float(ranks[positive].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def auc_standard_error(auc: float, n_pos: int, n_neg: int) -> float:
    """Hanley and McNeil's standard error of an AUC from ``n_pos`` and ``n_neg`` rows."""
    q1 = auc / (2 - auc)
    q2 = 2 * auc * auc / (1 + auc)
    variance = (
        auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc)
    ) / (n_pos * n_neg)
    return math.sqrt(max(variance, 0.0))


def brier_score(scores: Array, labels: Array) -> float:
    return float(np.mean((scores - labels) ** 2))


def expected_calibration_error(scores: Array, labels: Array, bins: int = ECE_BINS) -> float:
    """The rows' weighted mean of |mean score - share of positives| over equal-width bins
    of the score in [0, 1] (a score of 1 falls in the last bin)."""
    index = np.clip((scores * bins).astype(np.int64), 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    score_sum = np.bincount(index, weights=scores, minlength=bins)
    label_sum = np.bincount(index, weights=labels.astype(np.float64), minlength=bins)
    used = count > 0
    gaps = np.abs(score_sum[used] - label_sum[used])  # = count * |mean score - share|
    return float(gaps.sum() / len(scores))
