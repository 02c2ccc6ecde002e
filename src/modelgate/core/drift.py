"""Drift statistics: live values compared with a version's reference profile.

The reference profile is the ``reference.json`` written beside a version at build time (see
``modelgate.demo.reference`` for its shape): per feature a histogram on fixed edges, quantiles
and, for categorical features, category frequencies; per output a probability histogram over
[0, 1] or label frequencies. Live values are binned on the reference's own edges, so one pass
of ``np.searchsorted`` over a window is all a comparison costs.

- **PSI** (population stability index) over the reference bins plus one overflow bin on each
  side: ``sum((live - ref) * ln(live / ref))`` with both shares floored at :data:`PSI_FLOOR`.
  Above :data:`PSI_DRIFT` (0.2) is drift, above :data:`PSI_WATCH` (0.1) is worth watching.
- **KS** (two-sample Kolmogorov-Smirnov) on the binned CDFs: the largest gap between the
  reference's and the window's cumulative shares at the bin boundaries. Binning can only
  lower the statistic, so it errs toward silence. Drift when it exceeds
  :func:`ks_threshold`: the critical value at alpha = 0.001 for the two sample sizes, and at
  least :data:`KS_MIN_EFFECT` so that huge windows do not flag negligible shifts.
- **Chi-square** for categorical features against the reference frequencies, with an
  approximate p-value (Wilson-Hilferty); reported, while the status follows PSI.
- **Confidence** of a probability output: mean top probability, mean normalized entropy and
  the share of answers whose top probability is under :data:`LOW_CONFIDENCE`.

Pure numpy and the standard library; nothing here knows about requests or models.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "KS_ALPHA_COEFFICIENT",
    "KS_MIN_EFFECT",
    "LOW_CONFIDENCE",
    "PSI_DRIFT",
    "PSI_FLOOR",
    "PSI_WATCH",
    "Confidence",
    "FeatureReference",
    "Histogram",
    "ReferenceProfile",
    "bin_counts",
    "chi_square",
    "confidence",
    "ks_statistic",
    "ks_threshold",
    "psi",
]

PSI_WATCH = 0.1
PSI_DRIFT = 0.2
#: shares under this count as this in PSI, so an empty bin does not make it infinite
PSI_FLOOR = 1e-4
#: c(alpha) of the two-sample KS critical value c * sqrt((n + m) / (n * m)), alpha = 0.001
KS_ALPHA_COEFFICIENT = 1.949
#: the smallest KS statistic that counts as drift, however large the samples
KS_MIN_EFFECT = 0.1
#: a top probability under this is a low-confidence answer
LOW_CONFIDENCE = 0.6

FloatArray = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Histogram:
    """Counts on fixed edges (``len(edges) == len(counts) + 1``), the last bin closed."""

    edges: FloatArray
    counts: FloatArray

    @classmethod
    def of(cls, document: dict[str, Any]) -> Histogram:
        edges = np.asarray(document["edges"], dtype=np.float64)
        counts = np.asarray(document["counts"], dtype=np.float64)
        if edges.ndim != 1 or counts.shape != (edges.size - 1,) or counts.size == 0:
            raise ValueError("a histogram needs n + 1 edges for n counts")
        return cls(edges, counts)

    def extended(self) -> FloatArray:
        """The counts with an empty overflow bin on each side, as :func:`bin_counts` bins."""
        return np.concatenate(([0.0], self.counts, [0.0]))


@dataclass(frozen=True, slots=True)
class FeatureReference:
    name: str
    count: int
    histogram: Histogram
    #: category values and their reference shares (categorical features only)
    categories: tuple[float, ...] = ()
    frequencies: tuple[float, ...] = ()

    @property
    def categorical(self) -> bool:
        return bool(self.categories)


@dataclass(frozen=True, slots=True)
class ReferenceProfile:
    """What a version's training data looked like, read from its ``reference.json``."""

    features: tuple[FeatureReference, ...]
    #: output name -> histogram of one class's probability over [0, 1], and that class
    probabilities: dict[str, tuple[Histogram, str | None]]
    #: output name -> (class names, reference shares) of predicted labels
    labels: dict[str, tuple[tuple[str, ...], tuple[float, ...]]]

    @property
    def empty(self) -> bool:
        """True when it describes no feature and no output that can be compared."""
        return not (self.features or self.probabilities or self.labels)

    @classmethod
    def parse(cls, document: dict[str, Any]) -> ReferenceProfile:
        features = []
        for name, column in (document.get("features") or {}).items():
            categories = column.get("categories") or {}
            features.append(
                FeatureReference(
                    name=name,
                    count=int(column["count"]),
                    histogram=Histogram.of(column["histogram"]),
                    categories=tuple(float(v) for v in categories.get("values", ())),
                    frequencies=tuple(float(f) for f in categories.get("frequencies", ())),
                )
            )
        probabilities: dict[str, tuple[Histogram, str | None]] = {}
        labels: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {}
        for name, output in (document.get("outputs") or {}).items():
            if "histogram" in output and "class" in output:
                probabilities[name] = (Histogram.of(output["histogram"]), output.get("class"))
            elif "frequencies" in output and "values" in output:
                values = tuple(str(v) for v in output["values"])
                labels[name] = (values, tuple(float(f) for f in output["frequencies"]))
        return cls(tuple(features), probabilities, labels)

    @classmethod
    def load(cls, path: Path) -> ReferenceProfile | None:
        """The profile in ``path``; None when there is no such file (blocking I/O)."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        return cls.parse(json.loads(text))


def bin_counts(values: NDArray[Any], edges: FloatArray) -> FloatArray:
    """Counts of ``values`` in [below, the histogram's bins..., above], the way
    ``np.histogram`` bins (left-closed, the last bin closed)."""
    data = np.asarray(values, dtype=np.float64).ravel()
    index = np.searchsorted(edges, data, side="right")
    index[data == edges[-1]] = edges.size - 1
    return np.bincount(index, minlength=edges.size + 1).astype(np.float64)


def psi(reference: NDArray[Any], live: NDArray[Any]) -> float:
    """Population stability index of two count (or share) vectors over the same bins."""
    expected = np.asarray(reference, dtype=np.float64)
    actual = np.asarray(live, dtype=np.float64)
    if expected.shape != actual.shape or expected.sum() <= 0 or actual.sum() <= 0:
        raise ValueError("PSI needs two non-empty count vectors of the same length")
    p = np.maximum(expected / expected.sum(), PSI_FLOOR)
    q = np.maximum(actual / actual.sum(), PSI_FLOOR)
    return float(np.sum((q - p) * np.log(q / p)))


def ks_statistic(reference: NDArray[Any], live: NDArray[Any]) -> float:
    """The largest gap between the two cumulative shares of count vectors over the same
    ordered bins (the KS statistic evaluated at the bin boundaries)."""
    expected = np.asarray(reference, dtype=np.float64)
    actual = np.asarray(live, dtype=np.float64)
    if expected.shape != actual.shape or expected.sum() <= 0 or actual.sum() <= 0:
        raise ValueError("KS needs two non-empty count vectors of the same length")
    gap = np.cumsum(expected) / expected.sum() - np.cumsum(actual) / actual.sum()
    return float(np.max(np.abs(gap)))


def ks_threshold(n_reference: int, n_live: int) -> float:
    """The KS statistic above which a window counts as drifted (see the module docstring)."""
    critical = KS_ALPHA_COEFFICIENT * math.sqrt((n_reference + n_live) / (n_reference * n_live))
    return max(KS_MIN_EFFECT, critical)


def chi_square(frequencies: NDArray[Any], observed: NDArray[Any]) -> tuple[float, float]:
    """Pearson's statistic of ``observed`` counts against expected ``frequencies`` and its
    approximate p-value (Wilson-Hilferty). A category the reference never saw is expected
    with share :data:`PSI_FLOOR`."""
    counts = np.asarray(observed, dtype=np.float64)
    shares = np.maximum(np.asarray(frequencies, dtype=np.float64), PSI_FLOOR)
    total = counts.sum()
    if counts.shape != shares.shape or total <= 0 or counts.size < 2:
        raise ValueError("chi-square needs two or more categories and some observations")
    expected = total * shares / shares.sum()
    statistic = float(np.sum((counts - expected) ** 2 / expected))
    dof = counts.size - 1
    # (X / k) ** (1/3) is close to normal with mean 1 - 2 / (9k) and variance 2 / (9k).
    z = ((statistic / dof) ** (1 / 3) - (1 - 2 / (9 * dof))) / math.sqrt(2 / (9 * dof))
    return statistic, 0.5 * math.erfc(z / math.sqrt(2))


@dataclass(frozen=True, slots=True)
class Confidence:
    #: the mean of each answer's highest class probability
    mean_top_probability: float
    #: the mean entropy of the answers, divided by ln(classes): 0 is certain, 1 is uniform
    mean_entropy: float
    #: the share of answers whose top probability is under the threshold
    low_confidence_share: float


def confidence(probabilities: NDArray[Any], low: float = LOW_CONFIDENCE) -> Confidence:
    """Confidence of rows of class probabilities ([N, K], K >= 2)."""
    rows = np.asarray(probabilities, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[0] == 0 or rows.shape[1] < 2:
        raise ValueError(f"expected probabilities of shape [N, K >= 2], got {rows.shape}")
    top = rows.max(axis=1)
    clipped = np.clip(rows, 1e-12, 1.0)
    entropy = -np.sum(rows * np.log(clipped), axis=1) / math.log(rows.shape[1])
    return Confidence(
        mean_top_probability=float(top.mean()),
        mean_entropy=float(np.clip(entropy, 0.0, 1.0).mean()),
        low_confidence_share=float(np.mean(top < low)),
    )
