"""``FairlearnMetrics``: the :class:`~modelgate.core.monitoring.ports.FairnessMetrics` of
fairness audits, computed by Fairlearn (``MetricFrame`` per group; its
``demographic_parity_*``, ``equalized_odds_difference`` and
``equal_opportunity_difference`` between groups).

Fairlearn (and pandas, scikit-learn under it) is imported on the first audit, not when the
server starts: most servers never audit, and the import costs about a second.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from modelgate.core.monitoring.ports import FairnessGaps, GroupFigures

__all__ = ["FairlearnMetrics"]


class FairlearnMetrics:
    """Selection rate, accuracy, TPR and FPR per group, and the between-group differences,
    for binary decisions (positive class 1)."""

    def by_group(
        self, labels: Sequence[int], predicted: Sequence[int], groups: Sequence[str]
    ) -> list[GroupFigures]:
        from fairlearn.metrics import (  # lazily: see the module docstring
            MetricFrame,
            count,
            false_positive_rate,
            selection_rate,
            true_positive_rate,
        )
        from sklearn.metrics import accuracy_score

        y_true, y_pred, features = _arrays(labels, predicted, groups)
        frame = MetricFrame(
            metrics={
                "count": count,
                "positives": _positives,
                "selection_rate": selection_rate,
                "accuracy": accuracy_score,
                "true_positive_rate": true_positive_rate,
                "false_positive_rate": false_positive_rate,
            },
            y_true=y_true,
            y_pred=y_pred,
            sensitive_features=features,
        )
        table: dict[Any, dict[str, Any]] = frame.by_group.to_dict("index")
        return [
            GroupFigures(
                group=str(group),
                count=int(row["count"]),
                sufficient=True,
                positives=int(row["positives"]),
                selection_rate=float(row["selection_rate"]),
                accuracy=float(row["accuracy"]),
                true_positive_rate=float(row["true_positive_rate"]),
                false_positive_rate=float(row["false_positive_rate"]),
            )
            for group, row in table.items()
        ]

    def differences(
        self, labels: Sequence[int], predicted: Sequence[int], groups: Sequence[str]
    ) -> FairnessGaps:
        from fairlearn.metrics import (  # lazily: see the module docstring
            demographic_parity_difference,
            demographic_parity_ratio,
            equal_opportunity_difference,
            equalized_odds_difference,
        )

        y_true, y_pred, features = _arrays(labels, predicted, groups)
        return FairnessGaps(
            demographic_parity_difference=float(
                demographic_parity_difference(y_true, y_pred, sensitive_features=features)
            ),
            demographic_parity_ratio=float(
                demographic_parity_ratio(y_true, y_pred, sensitive_features=features)
            ),
            equalized_odds_difference=float(
                equalized_odds_difference(y_true, y_pred, sensitive_features=features)
            ),
            equal_opportunity_difference=float(
                equal_opportunity_difference(y_true, y_pred, sensitive_features=features)
            ),
        )


def _arrays(
    labels: Sequence[int], predicted: Sequence[int], groups: Sequence[str]
) -> tuple[Any, Any, Any]:
    import numpy as np

    return (
        np.asarray(labels, dtype=np.int64),
        np.asarray(predicted, dtype=np.int64),
        np.asarray(groups, dtype=object),
    )


def _positives(y_true: Any, y_pred: Any) -> int:
    return int((y_true == 1).sum())
