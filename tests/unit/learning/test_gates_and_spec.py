"""The manifest's learning section, and the gates a candidate must pass."""

from __future__ import annotations

from typing import Any

import pytest

from modelgate.core.serving.learning_spec import LearningGates
from modelgate.core.serving.manifest import parse_manifest
from modelgate.errors import ModelgateError
from modelgate.learning.evaluation import check_gates, finite

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
    assert spec.gates.auc_drop_max == 0.01 and spec.gates.demographic_parity_difference_max is None
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
    ],
)
def test_a_bad_learning_section_is_refused_by_name(
    learning: dict[str, Any], changes: dict[str, Any], says: str
) -> None:
    with pytest.raises(ModelgateError) as caught:
        _manifest(learning=learning, **changes)
    assert says in caught.value.message


def _evaluation(auc: float | None, dpd: float | None = 0.05) -> dict[str, Any]:
    return {
        "metrics": {"auc": auc, "accuracy": 0.8, "log_loss": 0.4, "calibration_error": 0.03},
        "fairness": [{"attribute": "age", "demographic_parity_difference": dpd,
                      "equalized_odds_difference": 0.1}],
    }  # fmt: skip


def test_task_gates_compare_with_the_serving_version() -> None:
    gates = LearningGates(auc_drop_max=0.01)
    assert check_gates(gates, _evaluation(0.795), _evaluation(0.80))[0]["passed"] is True
    worse = check_gates(gates, _evaluation(0.78), _evaluation(0.80))
    assert worse[0]["passed"] is False
    assert worse[0]["detail"] == "auc 0.7800 against 0.8000"


def test_fairness_gates_bound_the_candidate_and_what_cannot_be_judged_fails() -> None:
    gates = LearningGates(auc_drop_max=None, demographic_parity_difference_max=0.1)
    assert check_gates(gates, _evaluation(0.8, dpd=0.05), None)[0]["passed"] is True
    assert check_gates(gates, _evaluation(0.8, dpd=0.2), None)[0]["passed"] is False
    # fewer than two groups large enough: no difference, no evidence, no registration
    assert check_gates(gates, _evaluation(0.8, dpd=None), None)[0]["passed"] is False
    unjudged = check_gates(LearningGates(), _evaluation(None), _evaluation(0.8))
    assert unjudged[0]["passed"] is False


def test_without_a_serving_version_relative_gates_pass_and_say_why() -> None:
    result = check_gates(LearningGates(), _evaluation(0.7), None)
    assert result[0]["passed"] is True
    assert result[0]["detail"] == "no serving version to compare with"


def test_reports_hold_no_nan() -> None:
    assert finite({"a": [float("nan"), 1.0, {"b": float("inf")}]}) == {
        "a": [None, 1.0, {"b": None}]
    }
