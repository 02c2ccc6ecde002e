"""Lineage records (modelgate/repository/lineage.py) and the demo build's writing of them
(modelgate/demo/provenance.py), on copies of the built demo artifacts in a temporary folder:
the shared build is never written to."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from modelgate.demo import credit_risk, minilm
from modelgate.demo.provenance import (
    dataset_digest,
    write_credit_risk_lineage,
    write_minilm_lineage,
)
from modelgate.repository.lineage import (
    LINEAGE_FILE,
    MAX_LINEAGE_BYTES,
    file_digest,
    lineage_record,
    read_lineage,
    write_lineage,
)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def trained_versions(model_dir: Path) -> list[credit_risk.TrainedVersion]:
    """The built versions as the build's TrainedVersion, from their files (no training)."""
    versions = []
    for number in (1, 2):
        card = yaml.safe_load((model_dir / str(number) / "version.yaml").read_text())["card"]
        versions.append(
            credit_risk.TrainedVersion(
                version=number,
                algorithm=card["algorithm"],
                estimator=None,
                onnx_model=(model_dir / str(number) / "model.onnx").read_bytes(),
                metrics=card["validation_metrics"],
            )
        )
    return versions


def test_the_credit_risk_build_records_artifact_data_builder_and_metrics(
    demo_models: Path, tmp_path: Path
) -> None:
    model_dir = tmp_path / "credit-risk"
    shutil.copytree(demo_models / "credit-risk", model_dir)
    (model_dir / "1" / LINEAGE_FILE).unlink(missing_ok=True)
    (model_dir / "2" / LINEAGE_FILE).unlink(missing_ok=True)

    write_credit_risk_lineage(model_dir, trained_versions(model_dir), recipe="r" * 64)

    full = credit_risk.generate(credit_risk.N_ROWS, credit_risk.SEED)
    train, validation = credit_risk.split(full, credit_risk.VALIDATION_FRACTION, credit_risk.SEED)
    for number in (1, 2):
        read = read_lineage(model_dir / str(number))
        assert read.problem is None
        record = read.record
        assert record is not None
        assert record["origin"] == "demo-build"
        artifact = model_dir / str(number) / "model.onnx"
        assert record["artifact"] == {
            "file": "model.onnx",
            "sha256": sha256(artifact),
            "bytes": artifact.stat().st_size,
        }
        dataset = record["dataset"]
        assert dataset["rows"] == credit_risk.N_ROWS
        assert dataset["sha256"] == dataset_digest(full)["sha256"]
        assert dataset["train"]["rows"] == len(train) and dataset["validation"]["rows"] == len(
            validation
        )
        assert dataset["protected_attributes"] == ["age_band"]
        assert record["builder"]["recipe"] == "r" * 64
        assert "scikit-learn" in record["builder"]["dependencies"]
        assert record["evaluation"]["rows"] == len(validation)
        assert 0.5 < record["evaluation"]["metrics"]["auc"] <= 1.0
        assert record["started_by"] and record["created_at"]
    # the two versions share the data set but not the algorithm
    first, second = (read_lineage(model_dir / str(n)).record for n in (1, 2))
    assert first is not None and second is not None
    assert first["dataset"] == second["dataset"]
    assert first["training"]["algorithm"] != second["training"]["algorithm"]


def test_the_minilm_build_names_version_1_as_the_int8_versions_parent(
    demo_models: Path, tmp_path: Path
) -> None:
    model_dir = tmp_path / "minilm"
    for number in (1, 2):
        (model_dir / str(number)).mkdir(parents=True)
        # a link, not a copy: the hash is of the bytes the link leads to
        (model_dir / str(number) / "model.onnx").symlink_to(
            demo_models / minilm.MODEL_NAME / str(number) / "model.onnx"
        )
    checks = [minilm.VersionCheck(1, 0.9999, 1.0), minilm.VersionCheck(2, 0.99, 0.995)]

    write_minilm_lineage(model_dir, checks, None, minilm.WEIGHTS_PACKAGE)

    first = read_lineage(model_dir / "1").record
    second = read_lineage(model_dir / "2").record
    assert first is not None and second is not None
    assert first["parent"] is None
    assert second["parent"] == {"version": 1, "relation": "int8 dynamic quantization"}
    assert first["dataset"] is None  # pretrained weights: their data is not in the build
    real = demo_models / minilm.MODEL_NAME / "2" / "model.onnx"
    assert second["artifact"]["sha256"] == file_digest(real)["sha256"]
    assert second["evaluation"]["metrics"]["min_cosine_to_sentence_transformers"] == 0.99


def test_a_folder_without_a_record_has_an_unknown_lineage(tmp_path: Path) -> None:
    assert read_lineage(tmp_path).record is None
    assert read_lineage(tmp_path).problem is None


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (b"\xff\xfe", "not JSON"),
        (b" " * (MAX_LINEAGE_BYTES + 1), "larger than"),
    ],
)
def test_a_broken_record_is_reported_not_raised(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    (tmp_path / LINEAGE_FILE).write_bytes(content)
    read = read_lineage(tmp_path)
    assert read.record is None
    assert read.problem is not None and problem in read.problem


def test_an_unknown_origin_keeps_the_record_and_says_so(tmp_path: Path) -> None:
    (tmp_path / LINEAGE_FILE).write_text(json.dumps({"origin": "magic"}))
    read = read_lineage(tmp_path)
    assert read.record == {"origin": "magic"}
    assert read.problem is not None and "magic" in read.problem


def test_a_record_round_trips_and_is_written_whole(tmp_path: Path) -> None:
    artifact = tmp_path / "model.onnx"
    artifact.write_bytes(b"weights")
    record = lineage_record(
        origin="import",
        artifact=artifact,
        builder={"name": "by hand"},
        parent={"version": 3, "relation": "copied"},
        by="ops@example",
    )
    assert record["artifact"]["sha256"] == hashlib.sha256(b"weights").hexdigest()
    assert record["started_by"] == "ops@example"
    write_lineage(tmp_path, record)
    assert read_lineage(tmp_path).record == record
    # no temporary file left
    assert {p.name for p in tmp_path.iterdir()} == {"model.onnx", LINEAGE_FILE}


def test_an_unknown_origin_is_refused_when_writing(tmp_path: Path) -> None:
    (tmp_path / "m").write_bytes(b"x")
    with pytest.raises(ValueError, match="origin"):
        lineage_record(origin="magic", artifact=tmp_path / "m", builder={})


def test_the_digest_follows_a_changed_file(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"one")
    assert file_digest(path) == {"sha256": hashlib.sha256(b"one").hexdigest(), "bytes": 3}
    path.write_bytes(b"second")  # another size: another cache key
    assert file_digest(path) == {"sha256": hashlib.sha256(b"second").hexdigest(), "bytes": 6}


def test_the_dataset_digest_depends_on_every_value() -> None:
    data = credit_risk.generate(200, seed=5)
    changed = credit_risk.Dataset(data.features.copy(), data.labels.copy())
    changed.labels[0] = 1 - changed.labels[0]
    assert dataset_digest(data) == dataset_digest(credit_risk.generate(200, seed=5))
    assert dataset_digest(data)["sha256"] != dataset_digest(changed)["sha256"]
    assert dataset_digest(data)["bytes"] == data.features.nbytes + data.labels.nbytes
    assert np.array_equal(data.labels, credit_risk.generate(200, seed=5).labels)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_any_bytes_in_the_record_read_without_raising(content: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / LINEAGE_FILE).write_bytes(content)
        read = read_lineage(folder)
    assert read.record is None or isinstance(read.record, dict)
    assert read.record is not None or read.problem is not None
