"""The manifest's learning section, and the gates a candidate must pass."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from modelgate.core.serving.learning_spec import LearningGates
from modelgate.core.serving.manifest import parse_manifest
from modelgate.errors import ModelgateError
from modelgate.fairness.fairlearn_metrics import FairlearnMetrics
from modelgate.learning.evaluation import _score, check_gates, finite

BASE: dict[str, Any] = {
    "runtime": "onnxruntime",
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2], "feature_names": ["a", "b"]}],
    "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]}],
    "feedback": {"enabled": True},
    "payload_logging": {"enabled": True, "purpose": "training", "retention_days": 9},
}


def _manifest(**changes: Any) -> Any:
    return parse_manifest("m", {**BASE, **changes})


def test_a_learning_section_parses_with_its_defaults() -> None:
    spec = _manifest(learning={"trainer": "pkg.mod:train", "columns": {"a": "sensitive"}}).learning
    assert spec.gates.auc_drop_max == 0.01 and spec.gates.calibration_error_max is None
    assert spec.rollout.steps == (10, 50, 100) and spec.triggers.labels is None


@pytest.mark.parametrize(
    ("learning", "changes", "says"),
    [
        ({"trainer": "not an entry point"}, {}, "package.module:function"),
        (
            {"trainer": "pkg:train", "columns": {"c": "sensitive"}},
            {},
            "neither inputs nor features",
        ),
        ({"trainer": "pkg:train", "columns": {"a": "secret"}}, {}, "columns.a"),
        ({"trainer": "pkg:train"}, {"payload_logging": None}, "payload_logging"),
        ({"trainer": "pkg:train"}, {"feedback": None}, "feedback"),
        ({"trainer": "pkg:train", "rollout": {"steps": [50, 10]}}, {}, "rising"),
        ({"trainer": "pkg:train", "min_rows": 500, "max_rows": 100}, {}, "min_rows"),
        ({"trainer": "pkg:train", "triggers": {"every_seconds": 1}}, {}, "every_seconds"),
        (
            {"trainer": "pkg:train", "gates": {"demographic_parity_difference_max": 0.1}},
            {},
            "fairness.gates.max_demographic_parity_difference",
        ),
    ],
)
def test_a_bad_learning_section_is_refused_by_name(
    learning: dict[str, Any], changes: dict[str, Any], says: str
) -> None:
    with pytest.raises(ModelgateError) as caught:
        _manifest(learning=learning, **changes)
    assert says in caught.value.message


def _evaluation(auc: float | None, fairness: dict[str, Any] | None = None) -> dict[str, Any]:
    document: dict[str, Any] = {
        "metrics": {"auc": auc, "accuracy": 0.8, "log_loss": 0.4, "calibration_error": 0.03},
        "fairness": [],
    }
    if fairness is not None:
        document["fairness_gates"] = fairness
    return document


def test_task_gates_compare_with_the_serving_version() -> None:
    gates = LearningGates(auc_drop_max=0.01)
    assert check_gates(gates, _evaluation(0.795), _evaluation(0.80))[0]["passed"] is True
    worse = check_gates(gates, _evaluation(0.78), _evaluation(0.80))
    assert worse[0]["passed"] is False
    assert worse[0]["detail"] == "auc 0.7800 against 0.8000"


#: the demo's protected attribute: band 0 is selected far more often than band 1
_GROUPS = ["0"] * 100 + ["1"] * 100
_LABELS = np.array([1] * 60 + [0] * 40 + [1] * 20 + [0] * 80)
_PREDICTED = np.array([1] * 60 + [0] * 40 + [1] * 20 + [0] * 80)


def _scored(gates: dict[str, Any] | None, groups: list[str] = _GROUPS) -> dict[str, Any]:
    fairness: dict[str, Any] = {
        "protected": [{"name": "band", "input": "x", "feature": "b"}],
        "min_group_size": 30,
    }
    if gates is not None:
        fairness["gates"] = gates
    manifest = _manifest(fairness=fairness)
    scores = np.where(_PREDICTED == 1, 0.9, 0.1)
    return _score(manifest, 0, _LABELS, _PREDICTED, scores, {"band": groups}, FairlearnMetrics())


def test_the_manifests_fairness_gates_judge_the_candidate_as_a_canary_is_judged() -> None:
    kept = _scored({"max_demographic_parity_difference": 0.5})
    broken = _scored({"max_demographic_parity_difference": 0.2})
    assert kept["fairness_gates"]["state"] == "pass"
    assert broken["fairness_gates"]["state"] == "fail"
    assert broken["fairness_gates"]["breaches"][0]["metric"] == "demographic_parity_difference"
    assert broken["fairness_gates"]["breaches"][0]["value"] == pytest.approx(0.4)
    tasks = LearningGates(auc_drop_max=None)
    assert [g["passed"] for g in check_gates(tasks, kept, None)] == [True]
    gate = check_gates(tasks, broken, None)[0]
    assert gate["gate"] == "fairness" and gate["passed"] is False
    assert "demographic_parity_difference 0.400 is above 0.2" in gate["detail"]
    # without fairness.gates, fairness is reported and gates nothing
    assert "fairness_gates" not in _scored(None)
    assert check_gates(tasks, _scored(None), None) == []


def test_a_fairness_gate_that_cannot_be_judged_fails_and_names_the_small_group() -> None:
    # band 1 has 10 rows, under min_group_size: one group left, nothing to compare
    small = _scored({"max_demographic_parity_difference": 0.5}, ["0"] * 190 + ["1"] * 10)
    assert small["fairness_gates"]["state"] == "insufficient"
    assert small["fairness_gates"]["small_groups"] == [
        {"attribute": "band", "group": "1", "count": 10}
    ]
    gate = check_gates(LearningGates(auc_drop_max=None), small, None)[0]
    assert gate["passed"] is False and "band=1 has 10 labelled rows" in gate["detail"]


def test_a_task_metric_that_cannot_be_computed_fails() -> None:
    unjudged = check_gates(LearningGates(), _evaluation(None), _evaluation(0.8))
    assert unjudged[0]["passed"] is False
    insufficient = {"state": "insufficient", "reason": "no rows", "limits": {}}
    gates = check_gates(LearningGates(auc_drop_max=None), _evaluation(0.8, insufficient), None)
    assert gates[0]["passed"] is False


def test_without_a_serving_version_relative_gates_pass_and_say_why() -> None:
    result = check_gates(LearningGates(), _evaluation(0.7), None)
    assert result[0]["passed"] is True
    assert result[0]["detail"] == "no serving version to compare with"


def test_reports_hold_no_nan() -> None:
    assert finite({"a": [float("nan"), 1.0, {"b": float("inf")}]}) == {
        "a": [None, 1.0, {"b": None}]
    }
