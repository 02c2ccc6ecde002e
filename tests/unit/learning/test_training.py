"""The trainer's process: its job, its time limit, its failures and its environment."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelgate.core.serving.manifest import parse_manifest
from modelgate.learning.training import TrainerError, run_trainer, write_job
from tests.conftest import ROOT

MANIFEST = parse_manifest(
    "m",
    {
        "runtime": "onnxruntime",
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [-1, 3], "feature_names": ["a", "b", "c"]}
        ],
        "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]}],
    },
)


@pytest.fixture
def job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PYTHONPATH", f"{ROOT / 'src'}:{ROOT}")
    monkeypatch.setenv("MODELGATE_ADMIN_KEY", "do-not-leak")
    monkeypatch.setenv("WEBHOOK_SECRET", "do-not-leak")
    inputs = {"x": np.array([[1, 3], [4, 6]], dtype=np.float32)}  # column b removed
    write_job(tmp_path, MANIFEST, inputs, np.array([0, 1]), {"x": [0, 2]}, {"k": 1}, 7)
    return tmp_path


async def test_the_trainer_gets_the_sanitized_job_and_no_secrets(job: Path) -> None:
    answer = await run_trainer(
        job, "tests.unit.learning.trainers:reports", python=_python(), timeout_s=60
    )
    seen = answer["answer"]
    assert seen["environment"] == []
    assert seen["columns"] == {"x": ["a", "c"]} and seen["removed"] == {"x": ["b"]}
    assert seen["shape"] == [2, 2] and seen["labels"] == [0, 1]
    assert answer["trainer"] == "tests.unit.learning.trainers:reports"
    assert (job / "candidate" / "model.onnx").read_bytes() == b"artifact"


async def test_a_trainer_past_its_time_is_killed(job: Path) -> None:
    with pytest.raises(TrainerError) as caught:
        await run_trainer(job, "tests.unit.learning.trainers:sleeps", python=_python(), timeout_s=2)
    assert "ran past learning.timeout_seconds (2 s)" in caught.value.reason


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("tests.unit.learning.trainers:raises", "ValueError: no good"),
        ("tests.unit.learning.trainers:writes_nothing", "wrote no artifact"),
        ("tests.unit.learning.no_such_module:train", "ModuleNotFoundError"),
    ],
)
async def test_a_failing_trainer_says_why_in_its_log(job: Path, entry: str, says: str) -> None:
    with pytest.raises(TrainerError) as caught:
        await run_trainer(job, entry, python=_python(), timeout_s=60)
    assert caught.value.reason == "the trainer exited with status 1"
    assert says in caught.value.log_tail


def _python() -> str:
    import sys

    return sys.executable
