"""The anomaly check scores every request by one vectorized plan (issue 11): these properties
hold it to the implementation it replaced, kept here as the reference (its per-side arrays,
its operations in its order, and the detector's decision as it was), on random rows full of
the values where a score changes: the quantiles, the range, the margin and the next float
on either side of each, unseen categories, garbage near the float limit and NaN. Scores must
be equal to the last bit, and so must every answer: the score, whether the request is
flagged or refused, the features a flag names and the message a refusal sends."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelgate.core.monitoring.anomaly import AnomalyDetector
from modelgate.core.monitoring.anomaly_scores import (
    RANGE_MARGIN,
    FeatureBounds,
    anomaly_reasons,
    profile_bounds,
)
from modelgate.core.serving import profiles as reference
from modelgate.core.serving.manifest import ModelManifest, parse_manifest
from modelgate.errors import ModelgateError

NAMES = ("income", "ratio", "band", "constant", "flag")
RNG = np.random.default_rng(11)
TRAINING = np.stack(
    [
        np.exp(RNG.normal(10.5, 0.5, 3000)),  # skewed, wide
        RNG.beta(2.0, 5.0, 3000),  # bounded
        RNG.choice([0, 1, 2, 4], 3000).astype(np.float64),  # categorical, 3 unseen
        np.full(3000, 7.0),  # constant: every other value is out of range
        RNG.choice([0, 1], 3000).astype(np.float64),  # categorical, in a one-feature input
    ],
    axis=1,
)
PROFILE = {"features": reference.feature_statistics(TRAINING, NAMES, categorical=("band", "flag"))}
THRESHOLDS = (0.0, 0.3, 0.5, 0.9)


def manifest(
    datatype: str = "FP64", nonfinite: bool = False, anomaly: dict[str, Any] | None = None
) -> ModelManifest:
    """A 2-D input of four named columns, one the profile lacks (so the scored columns are
    picked out of a wider row), and a one-feature input with several values a row."""
    data: dict[str, Any] = {
        "runtime": "python",
        "inputs": [
            {
                "name": "x",
                "datatype": datatype,
                "shape": [-1, 5],
                "feature_names": ["income", "ratio", "unprofiled", "band", "constant"],
                "allow_nonfinite": nonfinite,
            },
            {"name": "flag", "datatype": datatype, "shape": [-1, 3], "allow_nonfinite": nonfinite},
        ],
        "outputs": [{"name": "y", "datatype": "FP64", "shape": [-1]}],
    }
    if anomaly is not None:
        data["anomaly"] = anomaly
    return parse_manifest("tabular", data)


# --- the implementation before issue 11, as it was -------------------------------------


@dataclass(frozen=True)
class ReferenceBounds:
    """The arrays the previous implementation kept, rebuilt as it built them from the
    quantiles and the range (which the new bounds still keep as they were)."""

    bounds: FeatureBounds
    sign: np.ndarray[Any, Any]
    tail: np.ndarray[Any, Any]
    tail_rate: np.ndarray[Any, Any]
    margin_rate: np.ndarray[Any, Any]


def reference_of(bounds: FeatureBounds) -> ReferenceBounds:
    minimum, maximum = bounds.minimum, bounds.maximum
    q_lo, q_hi = bounds.edges[0, 0], bounds.edges[1, 0]
    tiny = 1e-9 * np.maximum(1.0, np.maximum(np.abs(minimum), np.abs(maximum)))
    margin = np.maximum(RANGE_MARGIN * (maximum - minimum), tiny)
    tail = np.stack([q_lo - minimum, maximum - q_hi])
    shape = (2, 1, minimum.size)
    return ReferenceBounds(
        bounds=bounds,
        sign=np.array([-1.0, 1.0]).reshape(2, 1, 1),
        tail=tail.reshape(shape),
        tail_rate=(0.5 / np.maximum(tail, tiny)).reshape(shape),
        margin_rate=np.broadcast_to(0.5 / margin, (2, minimum.size)).reshape(shape),
    )


def reference_scores(ref: ReferenceBounds, array: np.ndarray[Any, Any]) -> Any:
    """``FeatureBounds.scores`` before issue 11, operation for operation."""
    bounds = ref.bounds
    x = bounds.values(array)
    if x is None:
        return None
    d = (x - bounds.edges) * ref.sign
    np.minimum(d, 1e200, out=d)
    np.maximum(d, -1.0, out=d)
    tail_part = d * ref.tail_rate
    np.maximum(tail_part, 0.0, out=tail_part)
    np.minimum(tail_part, 0.5, out=tail_part)
    d -= ref.tail
    d *= ref.margin_rate
    np.maximum(d, 0.0, out=d)
    np.minimum(d, 0.5, out=d)
    d += tail_part
    scores = np.maximum(d[0], d[1])
    if bounds.columns is None and scores.shape[1] != 1:
        scores = scores.max(axis=1, keepdims=True)
    if bounds.categories is not None:
        if bounds.columns is None:
            found = (x[:, :, None] == bounds.categories[0]).any(axis=2)
            scores[:, 0] = ~found.all(axis=1)
        else:
            found = (x[:, bounds.category_columns, None] == bounds.categories).any(axis=2)
            scores[:, bounds.category_columns] = ~found
    if bounds.nonfinite:
        scores[np.isnan(scores)] = 1.0
    return scores


def reference_screen(
    refs: list[ReferenceBounds], inputs: dict[str, Any], threshold: float, reject: bool
) -> tuple[str, Any]:
    """``AnomalyDetector.screen`` before issue 11: ("ok", parameters), ("flagged",
    parameters) or ("rejected", message)."""
    scored: list[tuple[FeatureBounds, Any]] = []
    score = 0.0
    for ref in refs:
        scores = reference_scores(ref, inputs[ref.bounds.input])
        if scores is not None and scores.size:
            scored.append((ref.bounds, scores))
            score = max(score, float(scores.max()))
    if score <= threshold:
        return "ok", {"anomaly_score": round(score, 4)}
    if reject:
        reasons = anomaly_reasons(scored, inputs, threshold)
        return "rejected", (
            f"input rejected as anomalous (score {score:.2f} above {threshold:g}): "
            + "; ".join(reasons)
        )
    names = [
        bounds.features[int(i)]
        for bounds, s in scored
        for i in np.flatnonzero((s > threshold).any(axis=0))
    ]
    return "flagged", {
        "anomaly_score": round(score, 4),
        "anomalous": True,
        "anomalous_features": ",".join(names),
    }


# --- random rows around the places where a score changes -------------------------------


def landmarks(bounds: FeatureBounds, index: int) -> list[float]:
    """A feature's quantiles, range and margin ends, and the next float either side."""
    low, high = float(bounds.minimum[index]), float(bounds.maximum[index])
    margin = RANGE_MARGIN * (high - low)
    points = [
        float(bounds.edges[0, 0, index]),
        float(bounds.edges[1, 0, index]),
        low,
        high,
        low - margin,
        high + margin,
        low - margin / 2,
        high + margin / 2,
    ]
    return [
        value
        for point in points
        for value in (np.nextafter(point, -np.inf), point, np.nextafter(point, np.inf))
    ]


def column(bounds: FeatureBounds, index: int, nonfinite: bool) -> st.SearchStrategy[float]:
    special = [0.0, -0.0, 1e300, -1e300, 1.7e308, -1.7e308, 3.0, 1.5, -1.0]
    choices = [
        st.sampled_from(landmarks(bounds, index) + special),
        st.floats(allow_nan=False, allow_infinity=False, width=64),
        st.floats(
            -3.0 * float(abs(bounds.maximum[index]) + 1),
            3.0 * float(abs(bounds.maximum[index]) + 1),
        ),
    ]
    if nonfinite:
        choices.append(st.sampled_from([np.nan, np.inf, -np.inf]))
    return st.one_of(*choices)


def scaled(column: dict[str, Any], factor: float) -> dict[str, Any]:
    quantiles = column["quantiles"]
    return column | {
        "min": column["min"] * factor,
        "max": column["max"] * factor,
        "quantiles": quantiles | {"values": [v * factor for v in quantiles["values"]]},
    }


#: two features scaled near the float limit: there FP32 values are clamped like FP64 ones
HUGE = {
    "features": PROFILE["features"]
    | {
        "income": scaled(PROFILE["features"]["income"], 1e280),
        "constant": scaled(PROFILE["features"]["constant"], 1e290),
    }
}
BASE = profile_bounds(PROFILE, manifest())
DTYPES = {"FP64": np.float64, "FP32": np.float32, "INT64": np.int64, "UINT8": np.uint8}


@st.composite
def requests(
    draw: st.DrawFn,
    profile: dict[str, Any] = PROFILE,
    datatype: str = "FP64",
    nonfinite: bool = False,
) -> dict[str, Any]:
    """A request of 1 to 6 rows for both inputs; the unprofiled column takes any value."""
    table, flag_bounds = profile_bounds(profile, manifest())
    rows = draw(st.integers(1, 6))
    table_columns = [column(table, i, nonfinite) for i in range(len(table.features))]
    wide = st.tuples(
        table_columns[0],
        table_columns[1],
        st.floats(allow_nan=False),
        table_columns[2],
        table_columns[3],
    )
    flag = st.tuples(*[column(flag_bounds, 0, nonfinite)] * 3)
    x = np.array(draw(st.lists(wide, min_size=rows, max_size=rows)))
    f = np.array(draw(st.lists(flag, min_size=rows, max_size=rows)))
    dtype = DTYPES[datatype]
    if np.issubdtype(dtype, np.integer):  # what a client's integers would hold
        info = np.iinfo(dtype)  # within 2**62: the largest int64 rounds up as a float
        low, high = max(int(info.min), -(2**62)), min(int(info.max), 2**62)
        x, f = (np.clip(np.nan_to_num(a), low, high).astype(dtype) for a in (x, f))
    else:
        with np.errstate(over="ignore"):  # FP32: what a client's float32 would hold
            x, f = x.astype(dtype), f.astype(dtype)
        if not nonfinite:  # the signature refuses them before the check
            x[~np.isfinite(x)] = 0.0
            f[~np.isfinite(f)] = 0.0
    return {"x": x, "flag": f}


def scores_agree(bounds: list[FeatureBounds], inputs: dict[str, Any]) -> None:
    for item in bounds:
        ours = item.scores(inputs[item.input])
        theirs = reference_scores(reference_of(item), inputs[item.input])
        assert ours is not None and theirs is not None
        np.testing.assert_array_equal(ours, theirs, strict=True)


@settings(max_examples=300)
@given(requests())
def test_scores_equal_the_previous_implementation(inputs: dict[str, Any]) -> None:
    scores_agree(BASE, inputs)


@pytest.mark.parametrize("datatype", ["FP32", "INT64", "UINT8"])
@settings(max_examples=100)
@given(data=st.data())
def test_narrow_types_skip_the_clamps_and_score_alike(datatype: str, data: st.DataObject) -> None:
    """FP32 and integers cannot overflow against this profile: scored without the clamps."""
    bounds = profile_bounds(PROFILE, manifest(datatype))
    assert all(np.dtype(DTYPES[datatype]) in b.unclamped for b in bounds)
    scores_agree(bounds, data.draw(requests(datatype=datatype)))


@pytest.mark.parametrize("datatype", ["FP64", "FP32"])
@settings(max_examples=100)
@given(data=st.data())
def test_nonfinite_scores_equal_the_previous_implementation(
    datatype: str, data: st.DataObject
) -> None:
    bounds = profile_bounds(PROFILE, manifest(datatype, nonfinite=True))
    scores_agree(bounds, data.draw(requests(datatype=datatype, nonfinite=True)))


@pytest.mark.parametrize("datatype", ["FP64", "FP32"])
@settings(max_examples=100, deadline=None)  # a shared machine's pauses are not slowness
@given(data=st.data())
def test_a_profile_near_the_float_limit_scores_alike(datatype: str, data: st.DataObject) -> None:
    bounds = profile_bounds(HUGE, manifest(datatype, nonfinite=True))
    assert not any(np.dtype(np.float32) in b.unclamped for b in bounds[:1])
    scores_agree(bounds, data.draw(requests(HUGE, datatype, nonfinite=True)))


@dataclass(eq=False)  # hashed by identity, like LoadedVersion
class Version:
    name: str
    version: int
    manifest: ModelManifest
    path: str


class Recorder:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def anomalous(self, model: str, version: str, action: str) -> None:
        self.calls.append(action)


#: the detector's cases: (datatype, nonfinite, profile); the last two reach the numpy plan
#: from the small-request loop (NaN) and the clamps (a profile near the float limit)
CASES = {
    "FP64": ("FP64", False, PROFILE),
    "FP32 nonfinite": ("FP32", True, PROFILE),
    "FP64 huge nonfinite": ("FP64", True, HUGE),
}


@pytest.fixture(scope="module", params=list(CASES))
def versions(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, list[tuple[Version, float, bool]]]:
    datatype, nonfinite, profile = CASES[request.param]
    folder = tmp_path_factory.mktemp("tabular")
    (folder / "reference.json").write_text(json.dumps(profile))
    return request.param, [
        (
            Version(
                "tabular",
                1,
                manifest(datatype, nonfinite, anomaly={"action": action, "threshold": t}),
                str(folder),
            ),
            t,
            action == "reject",
        )
        for t in THRESHOLDS
        for action in ("flag", "reject")
    ]


@settings(max_examples=150, deadline=None)  # eight detectors an example, on a shared machine
@given(data=st.data())
def test_every_answer_equals_the_previous_one(
    versions: tuple[str, list[tuple[Version, float, bool]]], data: st.DataObject
) -> None:
    """Each threshold, flag and reject: the same parameters, the same refusal, counted alike."""
    case, cases = versions
    datatype, nonfinite, profile = CASES[case]
    inputs = data.draw(requests(profile, datatype, nonfinite))
    refs = [reference_of(b) for b in profile_bounds(profile, manifest(datatype, nonfinite))]
    for version, threshold, reject in cases:
        recorder = Recorder()
        detector = AnomalyDetector(recorder)
        detector.prepare(version)  # type: ignore[arg-type]
        expected = reference_screen(refs, inputs, threshold, reject)
        try:
            answer: tuple[str, Any] = ("ok", detector.screen(version, inputs))  # type: ignore[arg-type]
        except ModelgateError as exc:
            answer = ("rejected", exc.message)
        else:
            if answer[1].get("anomalous"):
                answer = ("flagged", answer[1])
        assert answer == expected
        assert recorder.calls == ([] if expected[0] == "ok" else [expected[0]])


@pytest.mark.parametrize("case", list(CASES))
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_the_small_request_loop_gives_the_plans_worst_scores(
    case: str, data: st.DataObject
) -> None:
    """The loop small requests take scores each feature as the numpy plan does, to the last
    bit, clamped or not, or leaves a NaN to the plan."""
    datatype, nonfinite, profile = CASES[case]
    inputs = data.draw(requests(profile, datatype, nonfinite))
    for bounds in profile_bounds(profile, manifest(datatype, nonfinite)):
        array = inputs[bounds.input]
        values = bounds.values(array)
        kept = bounds.values(array, keep_floats=True)  # FP32 read as it is
        assert values is not None and kept is not None
        for clamp, read in itertools.product(
            {True, array.dtype not in bounds.unclamped}, [values, kept]
        ):
            worst = bounds.worst_scores(read, clamp)
            scores = bounds.value_scores(values, clamp)
            if worst is None:
                assert np.isnan(values[:, [i for i, *_ in bounds.numeric]]).any()
            else:
                expected = np.fmax.reduce(scores, axis=0)
                np.testing.assert_array_equal(np.array(worst), expected, strict=True)
