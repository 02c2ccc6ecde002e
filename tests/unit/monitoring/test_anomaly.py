"""Anomaly scores against a reference profile: the score's range and its landmarks (0 in the
1-99% quantiles, at most 0.5 inside the reference's range, 1 out of range or an unseen
category), and the detector's flag and reject actions, counts and unchecked versions."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelgate.core.monitoring.anomaly import AnomalyDetector
from modelgate.core.monitoring.anomaly_scores import RANGE_MARGIN, profile_bounds, row_scores
from modelgate.core.serving import profiles as reference
from modelgate.core.serving.manifest import ModelManifest, parse_manifest
from modelgate.errors import ErrorKind, ModelgateError

NAMES = ("income", "ratio", "band")
RNG = np.random.default_rng(5)
TRAINING = np.stack(
    [
        np.exp(RNG.normal(10.5, 0.5, 4000)),  # skewed, wide
        RNG.beta(2.0, 5.0, 4000),  # bounded
        RNG.choice([0, 1, 2, 4], 4000).astype(np.float64),  # categorical, 3 unseen
    ],
    axis=1,
)
PROFILE = {"features": reference.feature_statistics(TRAINING, NAMES, categorical=("band",))}
LOW = TRAINING.min(axis=0)
HIGH = TRAINING.max(axis=0)
Q01, Q99 = np.quantile(TRAINING, [0.01, 0.99], axis=0)


def manifest(anomaly: dict[str, Any] | None = None, **tensor: Any) -> ModelManifest:
    data: dict[str, Any] = {
        "runtime": "python",
        "inputs": [
            {"name": "x", "datatype": "FP64", "shape": [-1, 3], "feature_names": list(NAMES)}
            | tensor
        ],
        "outputs": [{"name": "y", "datatype": "FP64", "shape": [-1]}],
    }
    if anomaly is not None:
        data["anomaly"] = anomaly
    return parse_manifest("tabular", data)


BOUNDS = profile_bounds(PROFILE, manifest())


def scores_of(rows: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    return row_scores(BOUNDS, {"x": rows})


def inside(low: np.ndarray[Any, Any], high: np.ndarray[Any, Any]) -> st.SearchStrategy[Any]:
    """Rows of the numeric features between ``low`` and ``high``, band a seen category."""
    return st.tuples(
        st.floats(float(low[0]), float(high[0])),
        st.floats(float(low[1]), float(high[1])),
        st.sampled_from([0.0, 1.0, 2.0, 4.0]),
    )


@given(st.lists(st.tuples(*[st.floats(allow_nan=False)] * 3), min_size=1, max_size=20))
def test_every_score_is_between_0_and_1(rows: list[tuple[float, float, float]]) -> None:
    scores = scores_of(np.array(rows))
    assert scores.shape == (len(rows),)
    assert np.all((scores >= 0.0) & (scores <= 1.0))


@given(st.lists(st.tuples(*[st.floats(allow_infinity=False)] * 3), min_size=1, max_size=8))
def test_the_small_request_loop_agrees_with_the_scores(
    rows: list[tuple[float, float, float]],
) -> None:
    """``worst_scores`` (the loop small requests take) gives each feature's worst score of
    the numpy plan, to the last bit, or None for a NaN it leaves to the plan."""
    values = BOUNDS[0].values(np.asarray(rows))
    assert values is not None
    worst = BOUNDS[0].worst_scores(values)
    if worst is None:
        assert np.isnan(values).any()
    else:
        expected = BOUNDS[0].value_scores(values).max(axis=0)
        np.testing.assert_array_equal(np.array(worst), expected, strict=True)


@given(st.lists(inside(Q01, Q99), min_size=1, max_size=20))
def test_typical_rows_pass_the_small_request_loop(rows: list[tuple[float, float, float]]) -> None:
    values = BOUNDS[0].values(np.asarray(rows))
    assert values is not None and BOUNDS[0].worst_scores(values) == [0.0, 0.0, 0.0]


@given(st.lists(inside(Q01, Q99), min_size=1, max_size=20))
def test_typical_rows_score_0(rows: list[tuple[float, float, float]]) -> None:
    assert np.all(scores_of(np.array(rows)) == 0.0)


@given(st.lists(inside(LOW, HIGH), min_size=1, max_size=20))
def test_rows_inside_the_reference_range_are_never_out_of_range(
    rows: list[tuple[float, float, float]],
) -> None:
    assert np.all(scores_of(np.array(rows)) <= 0.5)


@given(
    st.sampled_from([0, 1]),
    st.booleans(),
    st.floats(min_value=1.0001, max_value=1e12),
)
def test_values_beyond_the_margin_score_1(column: int, above: bool, factor: float) -> None:
    row = np.array([[Q01[0], Q01[1], 0.0]])
    margin = RANGE_MARGIN * (HIGH[column] - LOW[column])
    row[0, column] = HIGH[column] + margin * factor if above else LOW[column] - margin * factor
    assert scores_of(row)[0] == 1.0


@settings(max_examples=50)
@given(st.sampled_from([0, 1]), st.floats(0.0, 3.0), st.floats(0.0, 3.0))
def test_the_score_grows_with_the_distance_out(column: int, near: float, far: float) -> None:
    near, far = sorted((near, far))
    span = HIGH[column] - LOW[column]
    rows = np.array([[Q99[0], Q99[1], 0.0]] * 2)
    rows[0, column] = Q99[column] + near * span
    rows[1, column] = Q99[column] + far * span
    scores = scores_of(rows)
    assert scores[0] <= scores[1]


def test_landmarks_of_a_numeric_feature() -> None:
    margin = RANGE_MARGIN * (HIGH[0] - LOW[0])
    rows = np.array(
        [
            [value, Q01[1], 0.0]
            for value in (Q99[0], HIGH[0], HIGH[0] + margin / 2, HIGH[0] + margin)
        ]
    )
    assert scores_of(rows) == pytest.approx([0.0, 0.5, 0.75, 1.0])


def test_an_unseen_category_scores_1() -> None:
    rows = np.array([[Q01[0], Q01[1], band] for band in (0.0, 4.0, 3.0, 1.5, -1.0)])
    assert scores_of(rows).tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]


def test_nan_scores_1_where_the_model_allows_it() -> None:
    bounds = profile_bounds(PROFILE, manifest(allow_nonfinite=True))
    rows = np.array([[np.nan, Q01[1], 0.0], [Q01[0], Q01[1], 0.0], [np.inf, Q01[1], 0.0]])
    assert row_scores(bounds, {"x": rows}).tolist() == [1.0, 0.0, 1.0]


def test_a_constant_feature_takes_no_other_value() -> None:
    profile = {"features": reference.feature_statistics(np.full((10, 1), 3.0), ["c"])}
    spec = parse_manifest(
        "constant",
        {
            "runtime": "python",
            "inputs": [{"name": "c", "datatype": "FP64", "shape": [-1]}],
            "outputs": [{"name": "y", "datatype": "FP64", "shape": [-1]}],
        },
    )
    bounds = profile_bounds(profile, spec)
    assert row_scores(bounds, {"c": np.array([3.0, 3.001, 2.0])}).tolist() == [0.0, 1.0, 1.0]


@dataclass(eq=False)  # hashed by identity, like LoadedVersion
class Version:
    """What the detector reads of a loaded version."""

    name: str
    version: int
    manifest: ModelManifest
    path: str


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    def anomalous(self, model: str, version: str, action: str) -> None:
        self.calls.append((model, version, action))


def loaded(tmp_path: Path, anomaly: dict[str, Any] | None, profile: bool = True) -> Version:
    if profile:
        (tmp_path / "reference.json").write_text(json.dumps(PROFILE))
    return Version("tabular", 1, manifest(anomaly), str(tmp_path))


GARBAGE = np.array([[Q01[0], Q01[1], 0.0], [1e12, Q01[1], 3.0]])
TYPICAL = np.array([[Q01[0], Q01[1], 0.0]])


def test_flag_marks_the_request_and_counts_it(tmp_path: Path) -> None:
    recorder = Recorder()
    detector = AnomalyDetector(recorder)
    version = loaded(tmp_path, {"action": "flag"})
    detector.prepare(version)  # type: ignore[arg-type]
    assert detector.screen(version, {"x": TYPICAL}) == {"anomaly_score": 0.0}  # type: ignore[arg-type]
    flagged = detector.screen(version, {"x": GARBAGE})  # type: ignore[arg-type]
    assert flagged == {
        "anomaly_score": 1.0,
        "anomalous": True,
        "anomalous_features": "income,band",
    }
    assert recorder.calls == [("tabular", "1", "flagged")]
    counts = detector.counts(version)  # type: ignore[arg-type]
    assert counts is not None
    assert (counts.requests, counts.flagged, counts.rejected, counts.share) == (2, 1, 0, 0.5)


def test_reject_refuses_naming_the_features(tmp_path: Path) -> None:
    recorder = Recorder()
    detector = AnomalyDetector(recorder)
    version = loaded(tmp_path, {"action": "reject", "threshold": 0.5})
    detector.prepare(version)  # type: ignore[arg-type]
    with pytest.raises(ModelgateError) as caught:
        detector.screen(version, {"x": GARBAGE})  # type: ignore[arg-type]
    assert caught.value.kind is ErrorKind.INVALID_ARGUMENT
    assert "income 1e+12 is out of the reference range" in caught.value.message
    assert "band 3 is a category the reference does not have" in caught.value.message
    assert "ratio" not in caught.value.message
    assert recorder.calls == [("tabular", "1", "rejected")]
    counts = detector.counts(version)  # type: ignore[arg-type]
    assert counts is not None and (counts.rejected, counts.share) == (1, 1.0)


def test_a_lower_threshold_flags_the_tails(tmp_path: Path) -> None:
    detector = AnomalyDetector()
    version = loaded(tmp_path, {"action": "flag", "threshold": 0.2})
    detector.prepare(version)  # type: ignore[arg-type]
    tail = np.array([[HIGH[0], Q01[1], 0.0]])  # the reference's largest income: 0.5
    params = detector.screen(version, {"x": tail})  # type: ignore[arg-type]
    assert params is not None and params["anomalous_features"] == "income"


def test_versions_without_a_profile_or_a_section_are_not_checked(tmp_path: Path) -> None:
    detector = AnomalyDetector()
    bare = loaded(tmp_path / "bare", {"action": "reject"}, profile=False)
    (tmp_path / "bare").mkdir()
    unasked = loaded(tmp_path, None)
    for version in (bare, unasked):
        detector.prepare(version)  # type: ignore[arg-type]
        assert detector.screen(version, {"x": GARBAGE}) is None  # type: ignore[arg-type]
        assert detector.counts(version) is None  # type: ignore[arg-type]


def test_a_broken_profile_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "reference.json").write_text('{"features": {"income": {"min": "x"}}}')
    version = Version("tabular", 1, manifest({"action": "reject"}), str(tmp_path))
    detector = AnomalyDetector()
    detector.prepare(version)  # type: ignore[arg-type]
    assert detector.screen(version, {"x": GARBAGE}) is None  # type: ignore[arg-type]


def test_an_anomaly_section_is_validated() -> None:
    with pytest.raises(ModelgateError, match="anomaly"):
        manifest({"action": "drop"})
    with pytest.raises(ModelgateError, match=r"anomaly\.threshold"):
        manifest({"threshold": 1.0})
