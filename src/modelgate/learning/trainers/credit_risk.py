"""The credit-risk demo model's trainer for the learning loop (docs/learning.md): scikit-learn,
exported to ONNX with skl2onnx as the demo build does (``credit_risk.export_onnx``).

The columns the manifest keeps from the trainer (``learning.columns``; the demo marks
``age_band`` sensitive) are absent from ``job.inputs``; the exported pipeline still takes all
12 features, as requests send them, and drops those columns first (a ``ColumnTransformer``),
so the model cannot use them. ``options.algorithm``: ``logistic`` (default; scaled logistic
regression, as version 1) or ``boosting`` (gradient-boosted trees, as version 2).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modelgate.demo.credit_risk import FEATURE_NAMES, INPUT_NAME, export_onnx
from modelgate.learning.trainer_api import TrainingJob

__all__ = ["train"]


def train(job: TrainingJob) -> dict[str, Any]:
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    kept_names = job.feature_names[INPUT_NAME]
    kept = [FEATURE_NAMES.index(name) for name in kept_names]
    # the full-width matrix the served model takes; removed columns stay zero and unused
    features = np.zeros((len(job.labels), len(FEATURE_NAMES)), dtype=np.float32)
    features[:, kept] = job.inputs[INPUT_NAME]
    algorithm = str(job.options.get("algorithm", "logistic"))
    if algorithm == "logistic":
        estimator: Any = Pipeline(
            [
                ("scale", StandardScaler()),
                ("classify", LogisticRegression(max_iter=1_000, random_state=job.seed)),
            ]
        )
        described = "StandardScaler + LogisticRegression"
    elif algorithm == "boosting":
        estimator = GradientBoostingClassifier(
            n_estimators=int(job.options.get("n_estimators", 100)),
            max_depth=3,
            learning_rate=0.1,
            random_state=job.seed,
        )
        described = f"GradientBoostingClassifier ({estimator.n_estimators} trees, depth 3)"
    else:
        raise ValueError(f"options.algorithm must be logistic or boosting, not {algorithm!r}")
    model = Pipeline(
        [
            ("columns", ColumnTransformer([("kept", "passthrough", kept)], remainder="drop")),
            ("model", estimator),
        ]
    )
    model.fit(features, job.labels)
    job.output.write_bytes(export_onnx(model))
    removed = job.removed.get(INPUT_NAME, [])
    return {
        "algorithm": f"{described}, without {', '.join(removed)}" if removed else described,
        "rows": len(job.labels),
        "features_used": kept_names,
    }
