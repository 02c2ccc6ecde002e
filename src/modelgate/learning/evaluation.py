"""The candidate against the serving version, on the same held-out rows, through the
server's own runtime: task metrics, fairness, and the manifest's gates.

Metrics (binary classifiers: the positive class's score, as feedback records it,
``core/monitoring/prediction_rows.py``): ROC AUC, accuracy, log loss and expected
calibration error (``core/monitoring/classification_metrics.py``, as concept drift reports
it). Fairness per protected attribute (``core/monitoring/fairness.audit_attribute`` with
Fairlearn, as ``/admin/models/{m}/fairness`` reports it), groups under the manifest's
``min_group_size`` reported and left out of the differences. The manifest's
``fairness.gates`` judge that audit with :func:`fairness_verdict`, exactly as a canary's
fairness gate judges live feedback: one set of limits, one rule for small groups.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import numpy as np

from modelgate.core.monitoring.classification_metrics import expected_calibration_error
from modelgate.core.monitoring.fairness import (
    DEFAULT_MIN_GROUP_SIZE,
    VersionAudit,
    audit_attribute,
)
from modelgate.core.monitoring.fairness_gates import fairness_verdict
from modelgate.core.monitoring.ports import FairnessMetrics
from modelgate.core.monitoring.prediction_rows import prediction_rows
from modelgate.core.serving.learning_spec import LearningGates
from modelgate.core.serving.manifest import ModelManifest
from modelgate.core.serving.ports import VersionSource
from modelgate.core.serving.tensors import Tensor
from modelgate.runtimes.catalog import loaders

__all__ = ["check_gates", "evaluate_version", "finite"]

_BATCH = 1024
_EPSILON = 1e-7


def evaluate_version(
    source: VersionSource,
    inputs: dict[str, np.ndarray[Any, Any]],
    labels: np.ndarray[Any, Any],
    groups: dict[str, list[str]],
    metrics: FairnessMetrics,
) -> dict[str, Any]:
    """Load ``source`` with the server's runtime, answer every held-out row, and score it."""
    manifest = source.manifest
    predictor = loaders()[manifest.runtime](source)
    predicted: list[int] = []
    scores: list[float] = []
    try:
        for start in range(0, len(labels), _BATCH):
            batch = {name: array[start : start + _BATCH] for name, array in inputs.items()}
            outputs = predictor.predict(batch)
            found = prediction_rows(manifest, _tensors(manifest, outputs))
            if found is None:
                raise ValueError("the model's outputs hold no predicted class or score")
            for decision, score in zip(*found, strict=True):
                predicted.append(-1 if decision is None else int(decision))
                scores.append(float("nan") if score is None else float(score))
    finally:
        predictor.close()
    return _score(
        manifest, source.version, labels, np.asarray(predicted), np.asarray(scores), groups,
        metrics,
    )  # fmt: skip


def _tensors(manifest: ModelManifest, outputs: dict[str, Any]) -> list[Tensor]:
    return [
        Tensor(spec.name, spec.datatype, np.asarray(outputs[spec.name]))
        for spec in manifest.outputs
        if spec.name in outputs
    ]


def _score(
    manifest: ModelManifest,
    source_version: int,
    labels: np.ndarray[Any, Any],
    predicted: np.ndarray[Any, Any],
    scores: np.ndarray[Any, Any],
    groups: dict[str, list[str]],
    metrics: FairnessMetrics,
) -> dict[str, Any]:
    from sklearn.metrics import log_loss, roc_auc_score  # lazily: scikit-learn is heavy

    binary = bool(np.isin(labels, (0, 1)).all())
    task: dict[str, float | None] = {"accuracy": float(np.mean(predicted == labels))}
    if binary and np.isfinite(scores).all():
        clipped = np.clip(scores, _EPSILON, 1 - _EPSILON)
        both = len(set(labels.tolist())) == 2
        task["auc"] = float(roc_auc_score(labels, scores)) if both else None
        task["log_loss"] = float(log_loss(labels, clipped, labels=[0, 1]))
        task["calibration_error"] = expected_calibration_error(scores, labels.astype(np.float64))
    else:
        task.update(auc=None, log_loss=None, calibration_error=None)
    minimum = (
        manifest.fairness.min_group_size
        if manifest.fairness is not None
        else DEFAULT_MIN_GROUP_SIZE
    )
    audits = []
    decisions = np.isin(predicted, (0, 1)) & np.isin(labels, (0, 1))
    rows = np.flatnonzero(decisions)
    for attribute, values in groups.items():
        audits.append(
            audit_attribute(
                metrics,
                attribute,
                labels[rows].tolist(),
                predicted[rows].tolist(),
                [values[i] for i in rows.tolist()],
                minimum,
            )
        )
    document: dict[str, Any] = {
        "rows": len(labels),
        "metrics": task,
        "fairness": [asdict(audit) for audit in audits],
    }
    gates = manifest.fairness.gates if manifest.fairness is not None else None
    if gates is not None:
        audit = VersionAudit(str(source_version), len(rows), len(labels) - len(rows), audits)
        verdict = fairness_verdict(gates, audit, min_group_size=minimum)
        document["fairness_gates"] = {"limits": gates.model_dump(), **verdict.summary()}
    judged: dict[str, Any] = finite(document)
    return judged


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float as None: Fairlearn's ratio of two zero
    selection rates is NaN, and reports are JSON, which has no NaN."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def check_gates(
    gates: LearningGates, candidate: dict[str, Any], serving: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """Each set gate: its name, limit, the candidate's (and the serving version's) value,
    and whether it passed; then, when the manifest sets ``fairness.gates``, the verdict
    :func:`evaluate_version` recorded (gate ``fairness``). A gate that cannot be judged (a
    metric the data cannot give, e.g. AUC with one class; a fairness verdict
    ``insufficient``) fails: a candidate is registered only on evidence."""
    results: list[dict[str, Any]] = []
    ours = candidate["metrics"]
    theirs = serving["metrics"] if serving is not None else {}

    def relative(name: str, metric: str, limit: float | None, higher_is_better: bool) -> None:
        if limit is None:
            return
        value, baseline = ours.get(metric), theirs.get(metric)
        if value is None:
            passed, detail = False, f"the candidate's {metric} cannot be computed"
        elif baseline is None:
            passed, detail = True, "no serving version to compare with"
        else:
            change = (baseline - value) if higher_is_better else (value - baseline)
            passed = change <= limit + 1e-12
            detail = f"{metric} {value:.4f} against {baseline:.4f}"
        results.append(
            {"gate": name, "limit": limit, "candidate": value, "serving": baseline,
             "passed": passed, "detail": detail}
        )  # fmt: skip

    def bound(name: str, value: float | None, limit: float | None, what: str) -> None:
        if limit is None:
            return
        passed = value is not None and value <= limit + 1e-12
        detail = f"{what} {value:.4f}" if value is not None else f"{what} cannot be computed"
        results.append(
            {"gate": name, "limit": limit, "candidate": value, "serving": None,
             "passed": passed, "detail": detail}
        )  # fmt: skip

    relative("auc_drop_max", "auc", gates.auc_drop_max, True)
    relative("accuracy_drop_max", "accuracy", gates.accuracy_drop_max, True)
    relative("log_loss_increase_max", "log_loss", gates.log_loss_increase_max, False)
    bound(
        "calibration_error_max",
        ours.get("calibration_error"),
        gates.calibration_error_max,
        "calibration error",
    )
    verdict = candidate.get("fairness_gates")
    if verdict is not None:  # the manifest's fairness.gates, judged by fairness_verdict
        results.append(
            {"gate": "fairness", "limit": verdict["limits"], "candidate": verdict["state"],
             "serving": None, "passed": verdict["state"] == "pass",
             "detail": verdict["reason"]}
        )  # fmt: skip
    return results
