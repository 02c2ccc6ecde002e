"""Fairness gates: a broken limit fails, kept limits pass, small groups are listed and
never judged silently, an attribute without two judgeable groups holds, and the manifest
refuses gates that set nothing or limits outside [0, 1]."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelgate.core.monitoring.fairness import AttributeAudit, VersionAudit
from modelgate.core.monitoring.fairness_gates import fairness_verdict
from modelgate.core.monitoring.ports import GroupFigures
from modelgate.core.serving.manifest import FairnessGates, parse_manifest
from modelgate.errors import ModelgateError


def _group(name: str, count: int, rate: float = 0.2) -> GroupFigures:
    if count < 30:
        return GroupFigures(group=name, count=count, sufficient=False)
    return GroupFigures(
        group=name,
        count=count,
        sufficient=True,
        positives=count // 4,
        selection_rate=rate,
        accuracy=0.8,
        true_positive_rate=0.5,
        false_positive_rate=0.1,
    )


def _attribute(
    dpd: float | None = 0.05,
    ratio: float | None = 0.9,
    eod: float | None = 0.05,
    eop: float | None = 0.04,
    groups: list[GroupFigures] | None = None,
    name: str = "age_band",
) -> AttributeAudit:
    groups = groups if groups is not None else [_group("0", 100), _group("1", 120)]
    ok = sum(g.sufficient for g in groups) >= 2
    return AttributeAudit(
        attribute=name,
        status="ok" if ok else "insufficient data",
        rows=sum(g.count for g in groups),
        groups=groups,
        demographic_parity_difference=dpd if ok else None,
        demographic_parity_ratio=ratio if ok else None,
        equalized_odds_difference=eod if ok else None,
        equal_opportunity_difference=eop if ok else None,
    )


def _audit(*attributes: AttributeAudit) -> VersionAudit:
    return VersionAudit(
        version="2",
        rows=max(a.rows for a in attributes),
        skipped_rows=0,
        attributes=list(attributes),
    )


GATES = FairnessGates(
    max_demographic_parity_difference=0.1,
    min_demographic_parity_ratio=0.8,
    max_equalized_odds_difference=0.15,
)


def test_kept_limits_pass() -> None:
    verdict = fairness_verdict(GATES, _audit(_attribute()), min_group_size=30)
    assert verdict.state == "pass"
    assert verdict.breaches == () and verdict.small_groups == ()
    assert "age_band (220 rows)" in verdict.reason


def test_each_broken_limit_is_named() -> None:
    verdict = fairness_verdict(
        GATES, _audit(_attribute(dpd=0.3, ratio=0.5, eod=0.1)), min_group_size=30
    )
    assert verdict.state == "fail"
    assert [(b.metric, b.op, b.limit) for b in verdict.breaches] == [
        ("demographic_parity_difference", ">", 0.1),
        ("demographic_parity_ratio", "<", 0.8),
    ]
    assert "demographic_parity_difference 0.300 is above 0.1" in verdict.reason
    assert "demographic_parity_ratio 0.500 is below 0.8" in verdict.reason


def test_an_unset_limit_is_not_checked() -> None:
    only_ratio = FairnessGates(min_demographic_parity_ratio=0.5)
    verdict = fairness_verdict(only_ratio, _audit(_attribute(dpd=0.9, eod=0.9)), min_group_size=30)
    assert verdict.state == "pass"


def test_small_groups_are_listed_not_judged() -> None:
    groups = [_group("0", 100), _group("1", 120), _group("4", 12)]
    verdict = fairness_verdict(GATES, _audit(_attribute(groups=groups)), min_group_size=30)
    assert verdict.state == "pass"
    assert [(s.group, s.count) for s in verdict.small_groups] == [("4", 12)]
    assert "age_band=4 has 12 labelled rows (< 30)" in verdict.reason
    strict = GATES.model_copy(update={"require_all_groups": True})
    held = fairness_verdict(strict, _audit(_attribute(groups=groups)), min_group_size=30)
    assert held.state == "insufficient"
    assert "age_band=4 has 12 labelled rows" in held.reason


def test_without_two_judgeable_groups_it_holds() -> None:
    groups = [_group("0", 200), _group("1", 10)]
    verdict = fairness_verdict(GATES, _audit(_attribute(groups=groups)), min_group_size=30)
    assert verdict.state == "insufficient"
    assert verdict.undecided == ("age_band",)
    assert "age_band=1 has 10 labelled rows" in verdict.reason
    nothing = fairness_verdict(GATES, None, min_group_size=30)
    assert nothing.state == "insufficient"


def test_a_breach_fails_even_when_another_attribute_is_undecided() -> None:
    broken = _attribute(dpd=0.4)
    unknown = _attribute(groups=[_group("n", 300), _group("s", 5)], name="region")
    verdict = fairness_verdict(GATES, _audit(broken, unknown), min_group_size=30)
    assert verdict.state == "fail"
    assert verdict.summary()["small_groups"] == [{"attribute": "region", "group": "s", "count": 5}]


def test_an_undefined_gated_metric_is_never_a_pass() -> None:
    nothing_selected = _attribute(ratio=float("nan"))
    verdict = fairness_verdict(GATES, _audit(nothing_selected), min_group_size=30)
    assert verdict.state == "insufficient"
    assert "undefined" in verdict.reason
    ungated = FairnessGates(max_demographic_parity_difference=0.1)
    assert fairness_verdict(ungated, _audit(nothing_selected), min_group_size=30).state == "pass"


@given(
    dpd=st.floats(0, 1),
    ratio=st.floats(0, 1),
    eod=st.floats(0, 1),
    eop=st.floats(0, 1),
    limit=st.floats(0, 1),
)
def test_verdict_agrees_with_the_limits(
    dpd: float, ratio: float, eod: float, eop: float, limit: float
) -> None:
    gates = FairnessGates(
        max_demographic_parity_difference=limit,
        min_demographic_parity_ratio=limit,
        max_equalized_odds_difference=limit,
        max_equal_opportunity_difference=limit,
    )
    verdict = fairness_verdict(gates, _audit(_attribute(dpd, ratio, eod, eop)), min_group_size=30)
    broken = dpd > limit or ratio < limit or eod > limit or eop > limit
    assert verdict.state == ("fail" if broken else "pass")
    assert len(verdict.breaches) == (dpd > limit) + (ratio < limit) + (eod > limit) + (eop > limit)


def _manifest(gates: Any) -> None:
    parse_manifest(
        "risk",
        {
            "runtime": "onnxruntime",
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2],
                        "feature_names": ["income", "band"]}],
            "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]}],
            "feedback": {"enabled": True},
            "fairness": {"protected": [{"name": "band", "input": "x", "feature": "band"}],
                         "gates": gates},
        },
    )  # fmt: skip


def test_manifest_gates_are_checked() -> None:
    _manifest({"max_demographic_parity_difference": 0.1})
    with pytest.raises(ModelgateError, match="sets no limit"):
        _manifest({})
    with pytest.raises(ModelgateError, match="max_equalized_odds_difference"):
        _manifest({"max_equalized_odds_difference": 1.5})
    with pytest.raises(ModelgateError, match="max_dpd"):
        _manifest({"max_dpd": 0.1})
