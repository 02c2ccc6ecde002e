"""The part of a reference profile a node announces for its gateways' anomaly checks
(core/monitoring/anomaly_profiles.py): a check built from it, after the JSON trip through
Redis, gives every request the outcome the check built from the whole ``reference.json``
gives (score, flag and features, or the refusal's words), on the demo credit-risk model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelgate.core.monitoring.anomaly import AnomalyDetector
from modelgate.core.monitoring.anomaly_profiles import screen_profile
from modelgate.core.serving.manifest import parse_manifest
from modelgate.core.serving.profiles import read_reference
from modelgate.core.serving.registry import LoadedVersion
from modelgate.core.serving.statistics import VersionStats
from modelgate.errors import ModelgateError
from modelgate.repository.filesystem import FileModelRepository

TYPICAL = [2, 52000, 0.31, 0.42, 36, 5, 0, 12000, 36, 9, 1, 1]


class _Runtime:
    async def infer(self, inputs: Any, timing: Any = None) -> Any:
        raise AssertionError("not run")

    @property
    def queue_depth(self) -> int:
        return 0

    def close(self) -> None:
        return None


def _version(manifest: Any) -> LoadedVersion:
    return LoadedVersion(
        "credit-risk", 2, manifest, _Runtime(), VersionStats("credit-risk", "2", None), 0, False,
        False,
    )  # fmt: skip


@pytest.fixture(scope="module", params=["flag", "reject"])
def checks(request: pytest.FixtureRequest) -> tuple[Any, LoadedVersion, LoadedVersion]:
    """The detector, a version checked from the whole profile, one from the announced part."""
    from tests.conftest import DEMO_MODELS

    source = FileModelRepository(str(DEMO_MODELS)).versions("credit-risk")[-1]
    data = source.manifest.model_dump(mode="json", exclude={"name"})
    data["anomaly"] = {"action": request.param, "threshold": 0.5}
    manifest = parse_manifest("credit-risk", data)
    document = read_reference(source)
    assert document is not None
    announced = orjson.loads(orjson.dumps(screen_profile(document, manifest)))  # via Redis
    assert len(orjson.dumps(announced)) < len(json.dumps(document)) / 2
    detector = AnomalyDetector()
    whole, part = _version(manifest), _version(manifest)
    for loaded, profile in ((whole, document), (part, announced)):
        screen = detector.build_screen(manifest, 2, profile)
        assert screen is not None
        detector.attach(loaded, screen)
    return detector, whole, part


def _outcome(detector: AnomalyDetector, loaded: LoadedVersion, rows: Any) -> Any:
    try:
        return detector.screen(loaded, {"features": rows})
    except ModelgateError as exc:
        return exc.kind, exc.message


#: a value of a feature: typical, rare, out of range, far out, or garbage
_VALUES = st.one_of(
    st.sampled_from([0.0, 1.0, 2.0, 5.0, 7.0, -1.0, 0.5, 36.0, 1e6, -1e6, 3.4e38]),
    st.floats(-1e7, 1e7, allow_nan=False, width=32),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    changes=st.lists(st.tuples(st.integers(0, 11), _VALUES), max_size=4),
    rows=st.integers(1, 40),
)
def test_the_announced_profile_checks_every_request_as_the_whole_one(
    checks: tuple[Any, LoadedVersion, LoadedVersion],
    changes: list[tuple[int, float]],
    rows: int,
) -> None:
    detector, whole, part = checks
    batch = np.tile(np.asarray(TYPICAL, dtype=np.float32), (rows, 1))
    for index, value in changes:
        batch[-1, index] = value  # the last row: small requests take the loop, large numpy
    assert _outcome(detector, part, batch) == _outcome(detector, whole, batch)


def test_nothing_is_announced_for_inputs_the_profile_does_not_describe() -> None:
    manifest = parse_manifest(
        "texts",
        {
            "runtime": "python",
            "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
            "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1]}],
            "anomaly": {"action": "flag"},
        },
    )
    profile = {"features": {"text": {"min": 0, "max": 1}}}
    assert screen_profile(profile, manifest) is None  # BYTES are not scored
    assert screen_profile({"features": {}}, manifest) is None


def test_a_profile_of_the_wrong_shape_raises_what_the_check_catches(tmp_path: Path) -> None:
    manifest = parse_manifest(
        "m",
        {
            "runtime": "python",
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 1]}],
            "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 1]}],
            "anomaly": {"action": "flag"},
        },
    )
    with pytest.raises((TypeError, AttributeError)):
        screen_profile({"features": {"x": [1, 2]}}, manifest)
    detector = AnomalyDetector()
    assert detector.announced_screen(manifest, 1, {"features": {"x": {"min": 3, "max": 1}}}) is None
