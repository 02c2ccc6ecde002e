"""Drift statistics: live values compared with a version's reference profile.

The reference profile is the ``reference.json`` written beside a version at build time (see
``modelgate.core.serving.profiles`` for its shape): per feature a histogram on fixed edges,
quantiles and, for categorical features, category frequencies; per output a probability histogram
over [0, 1] or label frequencies. Live values are binned on the reference's own edges, so one pass
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

A text model's profile has a ``text`` section instead of features (:class:`TextReference`:
input lengths, the embedding centroid and each reference embedding's cosine to it); its
statistics are in :mod:`modelgate.core.monitoring.text_drift`.

Pure numpy and the standard library; nothing here knows about requests or models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

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
    "Level",
    "ReferenceProfile",
    "TextReference",
    "bin_counts",
    "chi_square",
    "compare",
    "confidence",
    "ks_statistic",
    "ks_threshold",
    "psi",
    "psi_level",
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
#: how far a live distribution is from the reference's
Level = Literal["ok", "watch", "drift"]


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
class TextReference:
    """A text model's profile (``reference.json``'s ``text`` section): the lengths of its
    input texts in tokens, counted by the output ``length_output`` (the model's own token
    counts), and its embeddings: the centroid (the mean of the unit-length reference
    embeddings) and the histogram of each reference embedding's cosine to it."""

    input: str
    length_output: str | None = None
    length: Histogram | None = None
    length_count: int = 0
    length_mean: float = 0.0
    embedding_output: str | None = None
    centroid: FloatArray | None = None
    cosine: Histogram | None = None
    cosine_count: int = 0
    cosine_mean: float = 0.0

    @classmethod
    def parse(cls, document: dict[str, Any]) -> TextReference:
        length = document.get("length") or {}
        embedding = document.get("embedding") or {}
        if length and length.get("unit", "tokens") != "tokens":
            raise ValueError(f"text length unit '{length['unit']}' is not supported (tokens)")
        centroid = None
        if embedding:
            centroid = np.asarray(embedding["centroid"], dtype=np.float64)
            if centroid.ndim != 1 or not np.linalg.norm(centroid) > 0:
                raise ValueError("an embedding centroid must be a non-zero vector")
        cosine = embedding.get("cosine_to_centroid") or {}
        return cls(
            input=str(document["input"]),
            length_output=str(length["output"]) if length else None,
            length=Histogram.of(length["histogram"]) if length else None,
            length_count=int(length.get("count", 0)),
            length_mean=float(length.get("mean", 0.0)),
            embedding_output=str(embedding["output"]) if embedding else None,
            centroid=centroid,
            cosine=Histogram.of(cosine["histogram"]) if embedding else None,
            cosine_count=int(cosine.get("count", 0)),
            cosine_mean=float(cosine.get("mean", 0.0)),
        )


@dataclass(frozen=True, slots=True)
class ReferenceProfile:
    """What a version's training data looked like, read from its ``reference.json``."""

    features: tuple[FeatureReference, ...]
    #: output name -> histogram of one class's probability over [0, 1], and that class
    probabilities: dict[str, tuple[Histogram, str | None]]
    #: output name -> (class names, reference shares) of predicted labels
    labels: dict[str, tuple[tuple[str, ...], tuple[float, ...]]]
    #: a text model's input lengths and embeddings
    text: TextReference | None = None

    @property
    def empty(self) -> bool:
        """True when it describes no feature and no output that can be compared."""
        return not (self.features or self.probabilities or self.labels or self.text)

    @classmethod
    def parse(cls, document: dict[str, Any]) -> ReferenceProfile:
        """The profile in a ``reference.json`` document, read by
        :func:`modelgate.core.serving.profiles.read_reference` (which keeps it in the model's
        folder); ValueError, KeyError, TypeError or AttributeError when it is malformed."""
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
        text = document.get("text")
        return cls(
            tuple(features), probabilities, labels, TextReference.parse(text) if text else None
        )


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


def psi_level(value: float) -> Level:
    """The status a PSI value gives: above :data:`PSI_DRIFT` drift, :data:`PSI_WATCH` watch."""
    return "drift" if value > PSI_DRIFT else "watch" if value > PSI_WATCH else "ok"


def compare(
    histogram: Histogram, data: NDArray[Any], n_reference: int
) -> tuple[float, float, float, Level]:
    """PSI, KS, the KS threshold and the status of live ``data`` against a reference
    histogram of ``n_reference`` values: drift when KS is above its threshold, else as PSI
    says."""
    expected = histogram.extended()
    observed = bin_counts(data, histogram.edges)
    value = psi(expected, observed)
    ks = ks_statistic(expected, observed)
    threshold = ks_threshold(max(n_reference, 1), int(np.asarray(data).size))
    level: Level = "drift" if ks > threshold else psi_level(value)
    return value, ks, threshold, level


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
