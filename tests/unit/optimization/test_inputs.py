"""The reference inputs candidates are measured on: drawn from the version's own profile,
reproducible, inside the recorded range, and refused clearly when the profile is missing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelgate.core.serving.ports import VersionSource
from modelgate.errors import ModelgateError
from modelgate.optimization.inputs import calibration_feeds, reference_inputs
from modelgate.repository.filesystem import FileModelRepository


@pytest.fixture
def credit_risk(demo_models: Path, tmp_path: Path) -> Path:
    repository = tmp_path / "models"
    shutil.copytree(demo_models / "credit-risk", repository / "credit-risk")
    return repository


def _version(repository: Path, model: str, number: int) -> VersionSource:
    versions = FileModelRepository(str(repository)).versions(model)
    return next(v for v in versions if v.version == number)


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=st.integers(min_value=1, max_value=300), seed=st.integers(0, 2**32 - 1))
def test_rows_stay_inside_the_recorded_range(credit_risk: Path, rows: int, seed: int) -> None:
    source = _version(credit_risk, "credit-risk", 2)
    features = reference_inputs(source, rows, seed)["features"]
    assert features.shape == (rows, 12)
    assert features.dtype == np.float32
    profile = json.loads((Path(source.path) / "reference.json").read_text())["features"]
    for column, name in enumerate(source.manifest.inputs[0].feature_names or ()):
        assert features[:, column].min() >= np.float32(profile[name]["min"])
        assert features[:, column].max() <= np.float32(profile[name]["max"])
    again = reference_inputs(source, rows, seed)["features"]
    assert np.array_equal(features, again)
    feeds = calibration_feeds(source, {"features": features}, 8)
    assert len(feeds) == min(rows, 8)
    assert feeds[0]["features"].shape == (1, 12)


def test_a_version_without_a_profile_is_refused_by_name(credit_risk: Path) -> None:
    (credit_risk / "credit-risk" / "2" / "reference.json").unlink()
    source = _version(credit_risk, "credit-risk", 2)
    with pytest.raises(ModelgateError, match=r"version 2 has no readable reference\.json") as info:
        reference_inputs(source, 10)
    assert str(credit_risk) not in info.value.message  # the message names no host path


def test_texts_put_ordinary_sentences_first_and_keep_the_edge_cases(
    demo_models: Path,
) -> None:
    from modelgate.demo.sentences import REFERENCE_SENTENCES

    source = _version(demo_models, "all-MiniLM-L6-v2", 1)
    texts = list(reference_inputs(source, 64)["text"])
    assert len(texts) == 64
    assert texts[-len(REFERENCE_SENTENCES) :] == [t.encode() for t in REFERENCE_SENTENCES]
    assert b"" not in texts[:32]  # batch latency is timed on ordinary sentences
