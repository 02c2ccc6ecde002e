"""Fairness audits: the Fairlearn adapter's figures equal Fairlearn's own on a fixed data set,
identical groups differ by nothing, and the auditor flags and leaves out small groups,
skips non-binary rows, reads a bounded window and records the groups it needs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    demographic_parity_ratio,
    equal_opportunity_difference,
    equalized_odds_difference,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score

from modelgate.core.access.identity import Plan, Principal, Scope
from modelgate.core.monitoring.fairness import DEFAULT_MIN_GROUP_SIZE, FairnessAuditor
from modelgate.core.monitoring.feedback_recorder import FeedbackRecorder
from modelgate.core.monitoring.predictions import FeedbackRecord, PredictionRecord
from modelgate.core.serving.manifest import ModelManifest, parse_manifest
from modelgate.core.serving.requests import CompletedInference, InferenceRequest, InferenceResponse
from modelgate.core.serving.tensors import Tensor
from modelgate.demo import credit_risk
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.fairness.fairlearn_metrics import FairlearnMetrics
from modelgate.storage.memory.feedback import MemoryFeedbackStore

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
METRICS = FairlearnMetrics()


def _manifest(**extra: Any) -> ModelManifest:
    return parse_manifest(
        "risk",
        {
            "runtime": "onnxruntime",
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3],
                        "feature_names": ["income", "band", "region"]}],
            "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]}],
            "feedback": {"enabled": True},
            **extra,
        },
    )  # fmt: skip


def _fixed_data() -> tuple[list[int], list[int], list[str]]:
    """The demo's labels and a predictor that is right 80% of the time, grouped by band."""
    data = credit_risk.generate(3000, seed=5)
    rng = np.random.default_rng(9)
    labels = data.labels.astype(np.int64)
    predicted = np.where(rng.random(len(labels)) < 0.8, labels, 1 - labels)
    groups = [str(int(b)) for b in data.features[:, 0]]
    return labels.tolist(), predicted.tolist(), groups


# -- the adapter against Fairlearn -------------------------------------------------------
def test_group_figures_equal_fairlearns_metric_frame() -> None:
    labels, predicted, groups = _fixed_data()
    frame = MetricFrame(
        metrics={"sr": selection_rate, "acc": accuracy_score, "tpr": true_positive_rate,
                 "fpr": false_positive_rate},
        y_true=np.array(labels), y_pred=np.array(predicted), sensitive_features=np.array(groups),
    )  # fmt: skip
    expected = frame.by_group.to_dict("index")
    found = {f.group: f for f in METRICS.by_group(labels, predicted, groups)}
    assert set(found) == set(expected) == {"0", "1", "2", "3", "4", "5"}
    for name, figures in found.items():
        assert figures.count == groups.count(name)
        positives = sum(1 for y, g in zip(labels, groups, strict=True) if g == name and y == 1)
        assert figures.positives == positives
        assert figures.selection_rate == pytest.approx(expected[name]["sr"], abs=1e-12)
        assert figures.accuracy == pytest.approx(expected[name]["acc"], abs=1e-12)
        assert figures.true_positive_rate == pytest.approx(expected[name]["tpr"], abs=1e-12)
        assert figures.false_positive_rate == pytest.approx(expected[name]["fpr"], abs=1e-12)


def test_differences_equal_fairlearns() -> None:
    labels, predicted, groups = _fixed_data()
    y, p, g = np.array(labels), np.array(predicted), np.array(groups)
    gaps = METRICS.differences(labels, predicted, groups)
    assert gaps.demographic_parity_difference == pytest.approx(
        demographic_parity_difference(y, p, sensitive_features=g), abs=1e-12
    )
    assert gaps.demographic_parity_ratio == pytest.approx(
        demographic_parity_ratio(y, p, sensitive_features=g), abs=1e-12
    )
    assert gaps.equalized_odds_difference == pytest.approx(
        equalized_odds_difference(y, p, sensitive_features=g), abs=1e-12
    )
    assert gaps.equal_opportunity_difference == pytest.approx(
        equal_opportunity_difference(y, p, sensitive_features=g), abs=1e-12
    )
    assert gaps.demographic_parity_difference > 0  # the demo's bands do differ


rows = st.lists(st.tuples(st.integers(0, 1), st.integers(0, 1)), min_size=1, max_size=60)


@settings(max_examples=30, deadline=None)
@given(rows=rows, names=st.lists(st.text(min_size=1, max_size=8), min_size=2, max_size=4,
                                 unique=True))  # fmt: skip
def test_identical_groups_differ_by_nothing(rows: list[tuple[int, int]], names: list[str]) -> None:
    labels = [y for y, _ in rows] * len(names)
    predicted = [p for _, p in rows] * len(names)
    groups = [name for name in names for _ in rows]
    gaps = METRICS.differences(labels, predicted, groups)
    assert gaps.demographic_parity_difference == 0
    assert gaps.equalized_odds_difference == 0
    assert gaps.equal_opportunity_difference == 0
    if any(p == 1 for _, p in rows):  # 0/0 otherwise
        assert gaps.demographic_parity_ratio == 1
    figures = METRICS.by_group(labels, predicted, groups)
    assert len({(f.selection_rate, f.accuracy, f.true_positive_rate) for f in figures}) == 1


@settings(max_examples=30, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(0, 1), st.integers(0, 1), st.sampled_from("abc")),
                     min_size=2, max_size=80))  # fmt: skip
def test_differences_are_between_zero_and_one(rows: list[tuple[int, int, str]]) -> None:
    labels, predicted, groups = (list(c) for c in zip(*rows, strict=True))
    gaps = METRICS.differences(labels, predicted, groups)
    for value in (gaps.demographic_parity_difference, gaps.equalized_odds_difference,
                  gaps.equal_opportunity_difference):  # fmt: skip
        assert 0 <= value <= 1
    assert gaps.equalized_odds_difference >= gaps.equal_opportunity_difference
    assert 0 <= gaps.demographic_parity_ratio <= 1 or np.isnan(gaps.demographic_parity_ratio)


# -- the auditor ---------------------------------------------------------------------------
class _Registry:
    def __init__(self, manifest: ModelManifest) -> None:
        self._manifest = manifest

    async def manifest(self, name: str) -> ModelManifest:
        if name != self._manifest.name:
            raise ModelgateError(ErrorKind.NOT_FOUND, f"unknown model '{name}'")
        return self._manifest


class _Catalog:
    """What the auditor asks of a catalog: authorization (the real rule) and the manifest."""

    def __init__(self, manifest: ModelManifest) -> None:
        self.registry = _Registry(manifest)

    async def authorize(self, principal: Any, name: str, version: Any, scope: Scope) -> None:
        await self.registry.manifest(name)


def _prediction(n: int, tenant: str, version: str, predicted: int, band: str) -> PredictionRecord:
    at = NOW - timedelta(hours=1) + timedelta(seconds=n)
    return PredictionRecord(
        id=f"pr_{n:06d}", row=0, tenant_id=tenant, request_id=f"r{n}", inference_id=None,
        model="risk", version=version, subject=None, created_at=at,
        expires_at=at + timedelta(days=30), predicted=predicted, score=None,
        groups=(("band", band),),
    )  # fmt: skip


async def _store(rows: list[tuple[str, str, int, int, str]]) -> MemoryFeedbackStore:
    store = MemoryFeedbackStore()
    records = [_prediction(n, *row[:3], row[4]) for n, row in enumerate(rows)]
    await store.append(records)
    await store.label(
        [FeedbackRecord(r.id, 0, row[3], NOW) for r, row in zip(records, rows, strict=True)]
    )
    return store


def _auditor(store: MemoryFeedbackStore, manifest: ModelManifest, **kw: Any) -> FairnessAuditor:
    return FairnessAuditor(store, _Catalog(manifest), METRICS, **kw)  # type: ignore[arg-type]


FAIR = {"fairness": {"protected": [{"name": "band", "input": "x", "feature": "band"}],
                     "min_group_size": 5}}  # fmt: skip


async def test_small_groups_are_flagged_and_left_out_of_the_differences() -> None:
    rows = [("t1", "1", i % 2, i % 3 == 0, "a") for i in range(20)]
    rows += [("t1", "1", 1, 1, "b") for _ in range(10)]
    rows += [("t1", "1", 0, 1, "c") for _ in range(3)]  # below min_group_size 5
    rows += [("t1", "1", 2, 1, "a"), ("t1", "1", 1, 7, "b")]  # not binary: skipped
    report = await _auditor(await _store(rows), _manifest(**FAIR)).audit(None, "risk", now=NOW)
    [version] = report.versions
    assert (version.rows, version.skipped_rows) == (33, 2)
    [audit] = version.attributes
    assert audit.status == "ok"
    small = next(g for g in audit.groups if g.group == "c")
    assert (small.count, small.sufficient, small.selection_rate) == (3, False, None)
    kept = [r for r in rows if r[4] != "c" and r[2] in (0, 1) and r[3] in (0, 1)]
    y = np.array([int(r[3]) for r in kept])
    p = np.array([r[2] for r in kept])
    g = np.array([r[4] for r in kept])
    assert audit.demographic_parity_difference == pytest.approx(
        demographic_parity_difference(y, p, sensitive_features=g), abs=1e-12
    )


async def test_fewer_than_two_sufficient_groups_is_insufficient_data() -> None:
    rows = [("t1", "1", 1, 1, "a") for _ in range(40)] + [("t1", "1", 0, 0, "b")]
    carded = _manifest(card={"protected_attributes": ["band"]})  # no fairness section
    report = await _auditor(await _store(rows), carded).audit(None, "risk", now=NOW)
    assert report.min_group_size == DEFAULT_MIN_GROUP_SIZE
    [audit] = report.versions[0].attributes
    assert audit.status == "insufficient data"
    assert audit.demographic_parity_difference is None
    assert [(g.group, g.count, g.sufficient) for g in audit.groups] == [
        ("a", 40, True),
        ("b", 1, False),
    ]


async def test_the_window_is_capped_to_its_newest_rows_and_split_by_version() -> None:
    rows = [("t1", "1", 1, 1, "a") for _ in range(150)] + [("t1", "2", 0, 0, "b")] * 50
    auditor = _auditor(await _store(rows), _manifest(**FAIR), max_rows=120)
    report = await auditor.audit(None, "risk", now=NOW)
    assert report.truncated
    assert [(v.version, v.rows) for v in report.versions] == [("1", 70), ("2", 50)]
    whole = await _auditor(await _store(rows), _manifest(**FAIR)).audit(None, "risk", now=NOW)
    assert not whole.truncated
    assert [v.rows for v in whole.versions] == [150, 50]


async def test_a_tenant_reads_only_its_own_rows_and_names_no_other() -> None:
    rows = [("t1", "1", 1, 1, "a")] * 10 + [("t2", "1", 0, 0, "b")] * 6
    auditor = _auditor(await _store(rows), _manifest(**FAIR))
    tenant = Principal("t2", "key", frozenset({Scope.MODELS_READ.value}), Plan(name="p"), "k")
    report = await auditor.audit(tenant, "risk", now=NOW)
    assert report.tenant_id == "t2"
    assert report.versions[0].rows == 6
    with pytest.raises(ModelgateError) as denied:
        await auditor.audit(tenant, "risk", now=NOW, tenant_id="t1")
    assert denied.value.kind is ErrorKind.NOT_FOUND
    everyone = await auditor.audit(None, "risk", now=NOW)
    assert everyone.versions[0].rows == 16


async def test_bad_audits_are_invalid_argument() -> None:
    auditor = _auditor(MemoryFeedbackStore(), _manifest(**FAIR))
    for kw in ({"attribute": "income"}, {"since": NOW, "until": NOW - timedelta(days=1)}):
        with pytest.raises(ModelgateError) as bad:
            await auditor.audit(None, "risk", now=NOW, **kw)
        assert bad.value.kind is ErrorKind.INVALID_ARGUMENT
    plain = _auditor(MemoryFeedbackStore(), _manifest())
    with pytest.raises(ModelgateError, match="names no protected attributes"):
        await plain.audit(None, "risk", now=NOW)


# -- the manifest and the recorder ---------------------------------------------------------
def test_the_manifest_names_protected_attributes_or_the_card_does() -> None:
    assert [(a.name, a.input, a.feature) for a in _manifest(**FAIR).protected_attributes] == [
        ("band", "x", "band")
    ]
    carded = _manifest(card={"protected_attributes": ["region", "not-a-feature"]})
    assert [a.feature for a in carded.protected_attributes] == ["region"]
    assert _manifest().protected_attributes == ()
    for protected in ({"name": "b", "input": "y", "feature": "band"},
                      {"name": "b", "input": "x", "feature": "age"}):  # fmt: skip
        with pytest.raises(ModelgateError, match="fairness"):
            _manifest(fairness={"protected": [protected]})


async def test_the_recorder_keeps_each_rows_group() -> None:
    store = MemoryFeedbackStore()
    recorder = FeedbackRecorder(store)
    manifest = _manifest(**FAIR)
    x = np.array([[1.0, 3.0, 0.5], [2.0, 0.0, 1.5]], np.float32)
    request = InferenceRequest("risk", None, [Tensor("x", "FP32", x)], id="q1")
    response = InferenceResponse("risk", "1", [Tensor("label", "INT64", np.array([1, 0]))])
    recorder.completed(CompletedInference(None, request, response, manifest, {"x": x}))
    assert await recorder.flush() == 2
    found = await store.find("anonymous", "q1")
    assert [p.groups for p in found] == [(("band", "3"),), (("band", "0"),)]
