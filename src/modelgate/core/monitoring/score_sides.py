"""The terms of one numeric feature's anomaly score as Python floats, for the loop that
scores small requests (``FeatureBounds.worst_scores`` in
:mod:`~modelgate.core.monitoring.anomaly_scores`): the score of a value outside its
quantiles by the very float operations, in the very order, of the vectorized plan
(``FeatureBounds.value_scores``), so both give the same bits.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

__all__ = ["FAR", "Sides", "numeric_sides"]

#: the clamp on the distance past a quantile (see ``FeatureBounds.clamp_low``)
FAR = 1e200


class Sides(NamedTuple):
    """One numeric feature's terms as :meth:`FeatureBounds.value_scores` uses them, for a
    value outside the quantiles: the quantile it is past, the clamp's limit on that side,
    and the tail part's and the margin part's offset and rate, per side."""

    low: float
    high: float
    low_terms: tuple[float, float, float, float]
    high_terms: tuple[float, float, float, float]

    def score(self, v: float, clamp: bool) -> float:
        """The score of ``v`` outside ``[low, high]``: the operations of ``value_scores`` in
        its order, on the side ``v`` is past. The other side's parts are clipped to 0
        there and add nothing, so the sum is this side's tail part plus its margin part,
        to the last bit (NaN gives NaN)."""
        if v > self.high:
            d = v - self.high
            if clamp and d > FAR:
                d = FAR
            tail_offset, tail_rate, margin_offset, margin_rate = self.high_terms
        else:
            d = v - self.low
            if clamp and d < -FAR:
                d = -FAR
            tail_offset, tail_rate, margin_offset, margin_rate = self.low_terms
        return _clipped((d - tail_offset) * tail_rate) + _clipped((d - margin_offset) * margin_rate)


def _clipped(part: float) -> float:
    """``part`` within [0, 0.5] as ``np.maximum`` then ``np.minimum`` clip it."""
    return 0.0 if part < 0.0 else 0.5 if part > 0.5 else part


def numeric_sides(
    edges: NDArray[np.float64],
    offsets: NDArray[np.float64],
    rates: NDArray[np.float64],
    categorical: set[int],
) -> tuple[tuple[int, float, float, Sides], ...]:
    """The numeric features' terms for :meth:`FeatureBounds.worst_scores` (``offsets`` and
    ``rates`` as [part, side, F])."""
    low, high = edges[0, 0].tolist(), edges[1, 0].tolist()
    off, rate = offsets.tolist(), rates.tolist()
    return tuple(
        (
            i,
            low[i],
            high[i],
            Sides(
                low[i],
                high[i],
                (off[0][0][i], rate[0][0][i], off[1][0][i], rate[1][0][i]),
                (off[0][1][i], rate[0][1][i], off[1][1][i], rate[1][1][i]),
            ),
        )
        for i in range(len(low))
        if i not in categorical
    )
