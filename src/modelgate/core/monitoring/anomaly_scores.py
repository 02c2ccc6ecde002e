"""Anomaly scores of a request's inputs against its version's reference profile: the
per-feature bounds read from the profile once (:class:`FeatureBounds`, :func:`profile_bounds`)
and the score of a value, a row and a request.

A model whose manifest has an ``anomaly`` section
(:class:`~modelgate.core.serving.manifest.AnomalySpec`) has every request's inputs scored before
admission and before the runtime runs. The score of one value of a numeric feature comes from the
reference's quantiles ``q01`` and ``q99``, its range ``[min, max]`` and a margin
``m = RANGE_MARGIN * (max - min)``:

- 0 inside ``[q01, q99]``: a typical value;
- rising linearly to 0.5 at ``min`` (``max``): rare, but the reference has values as far out;
- rising linearly from 0.5 to 1 between ``max`` and ``max + m`` (``min - m`` and ``min``):
  beyond the reference's range, within the margin;
- 1 beyond ``max + m`` (below ``min - m``), and NaN: out of range.

A categorical feature scores 0 for a category the reference has and 1 for any other value
(unseen category). A row scores its worst feature, a request its worst row, so the score is
always in [0, 1] and a threshold of 0.5 (the default) marks exactly the requests with a value
outside the reference's range or an unseen category.

A small request is scored by a plain loop (:meth:`FeatureBounds.worst_scores`, about 2 µs a
row), since a dozen numpy calls cost more than that for a row or two: a value inside its
quantiles costs one comparison, one outside them a few float operations, the very ones of
the vectorized plan, so a row far from the reference costs about what a typical row does
(issue 11's odd rows: drift, or an attacker sending garbage, must not amplify the cost).
Larger requests are scored by the vectorized plan (:meth:`FeatureBounds.value_scores`), the
same numpy operations whatever the values. The words that explain a score
(:func:`anomaly_reasons`) are built only for a refusal, which returns them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from modelgate.core.monitoring.score_sides import FAR, Sides, numeric_sides
from modelgate.core.serving.manifest import ModelManifest

__all__ = [
    "RANGE_MARGIN",
    "TAIL_LEVELS",
    "Array",
    "FeatureBounds",
    "FloatArray",
    "anomalous_features",
    "anomaly_reasons",
    "over_threshold",
    "profile_bounds",
    "row_scores",
]

#: the margin beyond the reference's range, as a share of the range, before a value scores 1
RANGE_MARGIN = 0.1
#: the quantiles inside which a value scores 0
TAIL_LEVELS = (0.01, 0.99)
#: features named in a refusal, at most
_NAMED = 10


FloatArray = NDArray[np.float64]
Array = np.ndarray[Any, Any]


@dataclass(frozen=True, slots=True, eq=False)
class FeatureBounds:
    """Precomputed bounds of the features of one input, as arrays over its features.

    ``edges`` (the 1% and 99% quantiles, ``[2, 1, F]``) and the clamps (``[2, 1, 1]``) hold
    the low side first, then the high side. ``offsets`` and ``rates`` have the shape
    ``[2, 2, 1, F]``: the tail part, then the margin part of the score, each for both sides,
    so that one subtraction, one multiplication and one clip score both parts of both sides.
    The low side's offsets and rates carry its sign: ``(x - q01 + tail) * -rate`` is
    ``(q01 - x - tail) * rate`` to the last bit (negation is exact)."""

    input: str
    features: tuple[str, ...]
    #: the columns of a 2-D input holding the features (its width is ``width``); None: the
    #: input is one feature, and every value of a row is scored against it
    columns: NDArray[np.intp] | None
    width: int
    edges: FloatArray
    #: the distances past each side's quantile are kept within these (garbage near the float
    #: limit must not overflow, and a value inside the quantiles on that side counts 0,
    #: however far inside)
    clamp_low: FloatArray
    clamp_high: FloatArray
    #: the input types none of whose values can overflow the scores' arithmetic (FP32,
    #: integers, against a profile of ordinary magnitudes): their distances are never
    #: clamped, since the clamps could change no score
    unclamped: frozenset[np.dtype[Any]]
    #: what a distance past the quantile loses before each part counts: 0 for the tail part,
    #: the tail's width (quantile to min or max) for the margin part
    offsets: FloatArray
    #: each part's score per unit of distance: 0.5 over the tail's width, 0.5 over the margin
    rates: FloatArray
    minimum: FloatArray
    maximum: FloatArray
    #: (feature index, the reference's category values) of categorical features
    categorical: tuple[tuple[int, FloatArray], ...]
    #: the same as arrays: the categorical features' indexes [C], their values [C, K]
    #: padded with NaN; None without categorical features
    category_columns: NDArray[np.intp]
    categories: FloatArray | None
    #: the input may hold NaN (the manifest allows non-finite values)
    nonfinite: bool
    #: for :meth:`worst_scores` (small requests: a loop beats a dozen numpy calls), as
    #: Python floats taken from the arrays above: each numeric feature's index, 1% and 99%
    #: quantiles and :class:`~modelgate.core.monitoring.score_sides.Sides`, and each
    #: categorical feature's index and known values
    numeric: tuple[tuple[int, float, float, Sides], ...] = ()
    category_sets: tuple[tuple[int, frozenset[float]], ...] = ()

    @classmethod
    def of(
        cls,
        input_name: str,
        statistics: Sequence[tuple[str, Mapping[str, Any]]],
        columns: Sequence[int] | None,
        width: int,
        nonfinite: bool,
    ) -> FeatureBounds:
        """Bounds from each feature's column statistics (``min``, ``max``, ``quantiles``,
        ``categories``: see ``modelgate.core.serving.profiles``)."""
        lows, highs, minima, maxima, categorical = [], [], [], [], []
        for index, (_name, column) in enumerate(statistics):
            low, high = float(column["min"]), float(column["max"])
            if not low <= high:
                raise ValueError(f"min {low} above max {high}")
            quantiles = column.get("quantiles") or {}
            levels = [float(v) for v in quantiles.get("levels", ())]
            values = [float(v) for v in quantiles.get("values", ())]
            if levels and len(levels) == len(values):
                q_low = float(np.interp(TAIL_LEVELS[0], levels, values))
                q_high = float(np.interp(TAIL_LEVELS[1], levels, values))
            else:
                q_low, q_high = low, high
            lows.append(min(max(q_low, low), high))
            highs.append(max(min(q_high, high), lows[-1]))
            minima.append(low)
            maxima.append(high)
            seen = (column.get("categories") or {}).get("values")
            if seen:
                categorical.append((index, np.asarray(seen, dtype=np.float64)))
        minimum = np.asarray(minima)
        maximum = np.asarray(maxima)
        q_lo, q_hi = np.asarray(lows), np.asarray(highs)
        # a width that is never zero: a constant feature's other values are out of range
        tiny = 1e-9 * np.maximum(1.0, np.maximum(np.abs(minimum), np.abs(maximum)))
        margin = np.maximum(RANGE_MARGIN * (maximum - minimum), tiny)
        tail = np.stack([q_lo - minimum, maximum - q_hi])  # [2 sides, F]
        sign = np.array([[-1.0], [1.0]])  # the low side counts distances downwards
        offsets = np.stack([np.zeros_like(tail), tail]) * sign
        rates = np.stack([0.5 / np.maximum(tail, tiny), np.stack([0.5 / margin] * 2)]) * sign
        shape = (2, 1, len(statistics))
        edges = np.stack([q_lo, q_hi]).reshape(shape)
        return cls(
            input=input_name,
            features=tuple(name for name, _ in statistics),
            columns=None if columns is None else np.asarray(columns, dtype=np.intp),
            width=width,
            edges=edges,
            clamp_low=np.array([-FAR, -1.0]).reshape(2, 1, 1),
            clamp_high=np.array([1.0, FAR]).reshape(2, 1, 1),
            unclamped=_unclamped(edges, offsets, rates),
            offsets=offsets.reshape(2, *shape),
            rates=rates.reshape(2, *shape),
            minimum=minimum,
            maximum=maximum,
            categorical=tuple(categorical),
            category_columns=np.asarray([i for i, _ in categorical], dtype=np.intp),
            categories=_padded([seen for _, seen in categorical]),
            nonfinite=nonfinite,
            numeric=numeric_sides(edges, offsets, rates, {i for i, _ in categorical}),
            category_sets=tuple((i, frozenset(seen.tolist())) for i, seen in categorical),
        )

    def worst_scores(self, x: Array, clamp: bool = True) -> list[float] | None:
        """Each feature's worst score over the rows of ``x`` ([N, F] from :meth:`values`) by
        a plain loop, for small requests (about 2 µs for a row of 12 features, against about
        15 µs for the numpy plan): the very floats that :meth:`value_scores` gives, maximum
        over the rows. A value inside its quantiles scores 0 at the cost of one comparison;
        one outside them takes :meth:`Sides.score`. None when a numeric value is NaN: the
        numpy plan scores it (whether NaN counts 1 or stays NaN is its rule)."""
        worst = [0.0] * len(self.features)
        if self.columns is None:  # one feature, every value of a row scored against it
            values = x.ravel().tolist()
            if self.category_sets:
                return [0.0 if self.category_sets[0][1].issuperset(values) else 1.0]
            _, low, high, sides = self.numeric[0]
            for v in values:
                if not low <= v <= high:
                    score = sides.score(v, clamp)
                    if not score <= worst[0]:
                        if score != score:  # NaN
                            return None
                        worst[0] = score
            return worst
        numeric, categories = self.numeric, self.category_sets
        for row in x.tolist():
            for index, low, high, sides in numeric:
                v = row[index]
                if not low <= v <= high:
                    score = sides.score(v, clamp)
                    if not score <= worst[index]:
                        if score != score:
                            return None
                        worst[index] = score
            for index, known in categories:
                if row[index] not in known:  # NaN is no known category either
                    worst[index] = 1.0
        return worst

    def values(self, array: Array, keep_floats: bool = False) -> FloatArray | None:
        """The input's feature values as [N, F] (or [N, k] for a one-feature input of k
        values a row); None when its shape does not fit the profile. ``keep_floats``: a
        float input keeps its type, for :meth:`worst_scores`, which reads the values as
        Python floats, the very numbers a float64 copy would hold (integers are converted:
        Python compares an int with a float exactly, numpy as float64)."""
        if keep_floats and array.dtype.kind == "f":
            x = array
        else:
            x = np.asarray(array, dtype=np.float64)
        if self.columns is None:
            return x.reshape(x.shape[0], -1) if x.ndim else None
        if x.ndim != 2 or x.shape[1] != self.width:
            return None
        return x if self.columns.size == self.width else x[:, self.columns]

    def scores(self, array: Array) -> FloatArray | None:
        """Each row's score per feature, [N, F], in [0, 1] (see the module docstring); None
        when the input's shape does not fit the profile."""
        x = self.values(array)
        return None if x is None else self.value_scores(x, array.dtype not in self.unclamped)

    def value_scores(self, x: FloatArray, clamp: bool = True) -> FloatArray:
        """The scores of ``x`` ([N, F] from :meth:`values`): the same operations for every
        row, whatever its values (the module docstring says why). ``clamp=False`` is for
        values of a type in :attr:`unclamped` only."""
        d = x - self.edges  # [2, N, F]: how far past q01 (downwards), past q99
        if clamp:
            np.minimum(d, self.clamp_high, out=d)
            np.maximum(d, self.clamp_low, out=d)
        parts = d - self.offsets  # [2, 2, N, F]: the tail part, the margin part
        parts *= self.rates
        np.maximum(parts, 0.0, out=parts)
        np.minimum(parts, 0.5, out=parts)
        # a value is past at most one side's quantile, so the other side's parts are 0 and
        # the sum of the four is the one side's tail part plus its margin part
        scores: FloatArray = np.add.reduce(parts.reshape(4, *x.shape), axis=0)
        if self.columns is None and scores.shape[1] != 1:
            scores = np.maximum.reduce(scores, axis=1, keepdims=True)
        if self.categories is not None:
            if self.columns is None:  # every value of the row is this one feature
                unseen = np.logical_and.reduce(x[:, :, None] != self.categories[0], axis=2)
                scores[:, 0] = np.logical_or.reduce(unseen, axis=1)
            else:  # every categorical column in one comparison (NaN pads never match)
                unseen = x.take(self.category_columns, axis=1)[:, :, None] != self.categories
                scores[:, self.category_columns] = np.logical_and.reduce(unseen, axis=2)
        if self.nonfinite:
            scores[np.isnan(scores)] = 1.0
        return scores

    def describe(self, index: int, value: float, score: float) -> str:
        """Why feature ``index`` scored ``score`` for ``value``."""
        name = self.features[index]
        if any(i == index for i, _ in self.categorical):
            return f"{name} {value:g} is a category the reference does not have"
        low, high = self.minimum[index], self.maximum[index]
        if score >= 1.0:
            return f"{name} {value:g} is out of the reference range [{low:g}, {high:g}]"
        if score > 0.5:
            return f"{name} {value:g} is beyond the reference range [{low:g}, {high:g}]"
        return f"{name} {value:g} is in the reference's 1% tails"


#: the input types that may skip the clamps, with their largest magnitude
_NARROW: dict[np.dtype[Any], float] = {
    np.dtype(np.bool_): 1.0,
    np.dtype(np.float16): float(np.finfo(np.float16).max),
    np.dtype(np.float32): float(np.finfo(np.float32).max),
    **{
        np.dtype(name): float(-int(np.iinfo(name).min))
        for name in ("int8", "int16", "int32", "int64")
    },
    **{
        np.dtype(name): float(np.iinfo(name).max)
        for name in ("uint8", "uint16", "uint32", "uint64")
    },
}


def _unclamped(
    edges: FloatArray, offsets: FloatArray, rates: FloatArray
) -> frozenset[np.dtype[Any]]:
    """The types whose values keep every distance within the clamps and every product far
    from overflow. Unclamped, a distance below the low clamp (a value inside the quantiles on
    that side) gives negative parts where the clamped one gives negative parts too, both
    clipped to 0; infinities give infinite parts, clipped like the clamp's; so no score
    changes, to the last bit."""
    reach = float(np.max(np.abs(edges)))
    offset = float(np.max(np.abs(offsets)))
    rate = float(np.max(np.abs(rates)))
    return frozenset(
        dtype
        for dtype, largest in _NARROW.items()
        if largest + reach <= 1e200 and (largest + reach + offset) * rate <= 1e300
    )


def _padded(rows: list[FloatArray]) -> FloatArray | None:
    if not rows:
        return None
    table = np.full((len(rows), max(r.size for r in rows)), np.nan)
    for index, row in enumerate(rows):
        table[index, : row.size] = row
    return table


def profile_bounds(document: Mapping[str, Any], manifest: ModelManifest) -> list[FeatureBounds]:
    """The bounds of every input the profile describes: the named columns of a 2-D input
    with ``feature_names``, or a numeric input of a feature's name. BYTES inputs are not
    scored."""
    features = document.get("features") or {}
    found: list[FeatureBounds] = []
    for spec in manifest.inputs:
        if spec.datatype == "BYTES":
            continue
        if spec.feature_names:
            picked = [(i, n) for i, n in enumerate(spec.feature_names) if n in features]
            if picked:
                found.append(
                    FeatureBounds.of(
                        spec.name,
                        [(n, features[n]) for _, n in picked],
                        [i for i, _ in picked],
                        len(spec.feature_names),
                        spec.allow_nonfinite,
                    )
                )
        elif spec.name in features:
            found.append(
                FeatureBounds.of(
                    spec.name, [(spec.name, features[spec.name])], None, 1, spec.allow_nonfinite
                )
            )
    return found


def row_scores(bounds: Sequence[FeatureBounds], inputs: Mapping[str, Array]) -> FloatArray:
    """Each row's score (its worst feature over every scored input), [N]."""
    rows: FloatArray | None = None
    for item in bounds:
        array = inputs.get(item.input)
        scores = item.scores(array) if array is not None else None
        if scores is None:
            continue
        worst = scores.max(axis=1)
        rows = worst if rows is None else np.maximum(rows, worst)
    return rows if rows is not None else np.zeros(0)


def over_threshold(scores: FloatArray, threshold: float) -> list[int]:
    """The indexes of the features ([N, F] ``scores``) above ``threshold`` in some row."""
    return [int(i) for i in np.flatnonzero((scores > threshold).any(axis=0))]


def anomalous_features(
    worst: list[tuple[FeatureBounds, list[float]]], threshold: float
) -> list[str]:
    """The names of the features whose worst score (:meth:`FeatureBounds.worst_scores`, or
    the maximum over the rows that ignores NaN) is above ``threshold``, in the profile's
    order: what a flag returns (no value, no reason)."""
    return [
        name
        for bounds, scores in worst
        for name, s in zip(bounds.features, scores, strict=True)
        if s > threshold
    ]


def anomaly_reasons(
    scored: list[tuple[FeatureBounds, FloatArray]], inputs: Mapping[str, Array], threshold: float
) -> list[str]:
    """One phrase per feature above the threshold (its worst row), at most :data:`_NAMED`."""
    reasons: list[str] = []
    for bounds, scores in scored:
        values = bounds.values(inputs[bounds.input])
        assert values is not None
        for index in over_threshold(scores, threshold):
            row = int(np.argmax(scores[:, index]))
            column = values[row] if bounds.columns is None else values[row, index : index + 1]
            worst = float(column[np.argmax(np.abs(column - bounds.edges[1, 0, index]))])
            reasons.append(bounds.describe(index, worst, float(scores[row, index])))
    if len(reasons) > _NAMED:
        reasons = [*reasons[:_NAMED], f"and {len(reasons) - _NAMED} more"]
    return reasons
