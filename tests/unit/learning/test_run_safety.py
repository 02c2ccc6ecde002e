"""What a run leaves and bounds: text inputs written without padding and capped, each
tenant's share of the data set and of the held-out rows, the trainer's environment, the
training data deleted however training ends, the sweep, and the run's lock."""

from __future__ import annotations

import json
import os
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelgate.core.serving.learning_spec import LearningSpec
from modelgate.core.serving.manifest import parse_manifest
from modelgate.learning import run_lock
from modelgate.learning import runs as runs_module
from modelgate.learning.dataset import _Held, choose_rows
from modelgate.learning.run_steps import _split, train_once
from modelgate.learning.runs import LearningService
from modelgate.learning.sanitization import sanitize
from modelgate.learning.trainer_api import DATA_FILES, load_job
from modelgate.learning.training import trainer_environment, write_job
from tests.conftest import ROOT

TEXT = parse_manifest(
    "m",
    {
        "runtime": "onnxruntime",
        "inputs": [{"name": "note", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]}],
        "feedback": {"enabled": True},
        "payload_logging": {"enabled": True, "purpose": "training", "retention_days": 9},
        "learning": {"trainer": "pkg.mod:train", "max_text_chars": 1000},
    },
)


def _row(note: str, label: int = 1, tenant: str = "acme") -> dict[str, Any]:
    return {"tenant_id": tenant, "label": label, "inputs": {"note": [note]}}


def test_one_long_text_does_not_pad_every_row(tmp_path: Path) -> None:
    """Fixed-width unicode made every row as long as the longest (4 bytes a character)."""
    notes = np.empty(100, dtype=object)
    notes[:] = ["short"] * 99 + ["x" * 200_000]
    write_job(tmp_path, TEXT, {"note": notes}, np.zeros(100, dtype=np.int64), {}, {}, 0)
    written = sum((tmp_path / name).stat().st_size for name in DATA_FILES)
    assert written < 300_000  # padded: 100 rows x 200,000 characters x 4 bytes = 80 MB
    job = load_job(tmp_path)
    assert job.inputs["note"].dtype == object and job.inputs["note"].tolist() == notes.tolist()


def test_an_over_long_text_leaves_its_row_out_and_is_reported() -> None:
    assert TEXT.learning is not None
    data = sanitize([_row("ok"), _row("y" * 1001, 0), _row("fine", 0)], TEXT, TEXT.learning)
    assert data.inputs["note"].tolist() == ["ok", "fine"]
    assert data.report["rows_left_out"] == {"a text longer than learning.max_text_chars (1000)": 1}


def test_the_data_set_stops_at_its_bytes_and_keeps_the_newest() -> None:
    spec = LearningSpec(trainer="pkg.mod:train", max_dataset_bytes=1024)
    rows = [_row(f"{i:03d}" + "z" * 300, i % 2) for i in range(10)]  # oldest first
    data = sanitize(rows, TEXT, spec)
    assert 0 < len(data) < 10
    kept = [note[:3] for note in data.inputs["note"].tolist()]
    assert kept == [f"{i:03d}" for i in range(10 - len(data), 10)]  # the newest, in order
    assert data.report["rows_left_out"] == {
        "past learning.max_dataset_bytes (1024)": 10 - len(data)
    }


def _pairs(tenants: list[str]) -> dict[str, deque[tuple[int, dict[str, Any]]]]:
    kept: dict[str, deque[tuple[int, dict[str, Any]]]] = {}
    for order, tenant in enumerate(tenants):
        kept.setdefault(tenant, deque()).append((order, {"tenant_id": tenant, "n": order}))
    return kept


def test_a_flooding_tenant_displaces_no_one_else() -> None:
    tenants = ["a"] * 30 + ["b"] * 30 + ["flood"] * 1000  # the flood is the newest
    rows, over = choose_rows(_pairs(tenants), 100, 0.5)
    counts = {t: sum(r["tenant_id"] == t for r in rows) for t in ("a", "b", "flood")}
    assert counts == {"a": 20, "b": 30, "flood": 50}  # a's newest 20 fill what is left
    assert [r["n"] for r in rows] == sorted(r["n"] for r in rows) and over > 0
    alone, _ = choose_rows(_pairs(["solo"] * 300), 100, 0.5)  # one tenant: all of it
    assert len(alone) == 100


def test_the_rows_held_while_reading_are_bounded_and_a_flood_drops_its_own() -> None:
    held = _Held(max_rows=1000, max_bytes=20_000)
    for i in range(50):
        held.keep({"tenant_id": "small", "inputs": {"note": [f"s{i:03d}"]}})
    for _ in range(500):
        held.keep({"tenant_id": "flood", "inputs": {"note": ["f" * 1000]}})
    sizes = [len(json.dumps(row["inputs"])) for rows in held.kept.values() for _, row in rows]
    assert sum(sizes) <= 20_000
    assert len(held.kept["small"]) == 50  # the flood pushed out its own rows only
    assert 0 < len(held.kept["flood"]) < 500
    held.keep({"tenant_id": "small", "inputs": {"note": ["s" * 30_000]}})  # over all of it
    assert sum(len(rows) for rows in held.kept.values()) <= 51


@given(st.lists(st.sampled_from(["a", "b", "c"]), min_size=20, max_size=300))
@settings(max_examples=50, deadline=None)
def test_no_tenant_passes_its_share(tenants: list[str]) -> None:
    rows, _ = choose_rows(_pairs(tenants), 50, 0.4)
    if len(set(tenants)) > 1:
        for tenant in set(tenants):
            assert sum(r["tenant_id"] == tenant for r in rows) <= 20
    assert len(rows) <= 50


def test_each_tenant_holds_out_its_own_share() -> None:
    spec = LearningSpec(trainer="pkg.mod:train", holdout_fraction=0.25, seed=0)
    data = sanitize(
        [_row(f"n{i}", i % 2, "big" if i % 10 else "small") for i in range(200)], TEXT, spec
    )
    train, held = _split(data, spec)
    assert len(set(train.tolist()) | set(held.tolist())) == 200
    small = [i for i, t in enumerate(data.tenants) if t == "small"]
    assert len(set(held.tolist()) & set(small)) == round(len(small) * 0.25)  # exactly 5


def test_the_trainer_gets_an_allow_listed_environment() -> None:
    base = {"PATH": "/bin", "HOME": "/h", "LC_ALL": "C", "PYTHONPATH": "/p",
            "REDIS_URL": "redis://:pw@host", "OTEL_EXPORTER_OTLP_HEADERS": "api-key=x",
            "MODELGATE_ADMIN_KEY": "k", "HF_HOME": "/hf", "MODELGATE_X": "y"}  # fmt: skip
    assert trainer_environment(base) == {"PATH": "/bin", "HOME": "/h", "LC_ALL": "C",
                                         "PYTHONPATH": "/p"}  # fmt: skip
    assert trainer_environment(base, ["HF_HOME"])["HF_HOME"] == "/hf"
    with pytest.raises(ValueError, match="never reach a trainer"):
        LearningSpec(trainer="pkg.mod:train", environment=("MODELGATE_ADMIN_KEY",))


@pytest.mark.parametrize("entry", ["tests.unit.learning.trainers:raises", "nope.nope:train"])
async def test_a_failed_training_leaves_no_data_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entry: str
) -> None:
    monkeypatch.setenv("PYTHONPATH", f"{ROOT / 'src'}:{ROOT}")
    notes = np.array(["a", "b"], dtype=object)
    write_job(tmp_path, TEXT, {"note": notes}, np.array([0, 1]), {}, {}, 0)
    assert all((tmp_path / name).exists() for name in DATA_FILES)
    spec = LearningSpec(trainer=entry, timeout_seconds=60)
    with pytest.raises(runs_module.TrainerError):
        await train_once(tmp_path, spec, sys.executable)
    assert not any((tmp_path / name).exists() for name in DATA_FILES)


class _Repository:
    def names(self) -> list[str]:
        return ["m"]


class _Registry:
    repository = _Repository()


def _service(tmp_path: Path) -> LearningService:
    return LearningService(
        repository=tmp_path,
        registry=_Registry(),  # type: ignore[arg-type]
        feedback=None,  # type: ignore[arg-type]
        privacy=None,  # type: ignore[arg-type]
        deployments=None,  # type: ignore[arg-type]
        audit=None,  # type: ignore[arg-type]
        fairness=None,  # type: ignore[arg-type]
        python="python",
        retention_days=30,
    )


def _run_folder(tmp_path: Path, run_id: str, finished: str | None) -> Path:
    folder = tmp_path / "m" / ".learning" / run_id
    (folder / "train" / "candidate").mkdir(parents=True)
    for name in DATA_FILES:
        (folder / "train" / name).write_text("rows")
    (folder / "train" / "candidate" / "model.onnx").write_text("onnx")
    created = finished or "2026-12-07T00:00:00+00:00"
    (folder / "run.json").write_text(
        f'{{"id": "{run_id}", "created_at": "{created}", "finished_at": '
        + (f'"{finished}"' if finished else "null")
        + "}"
    )
    return folder


def test_the_sweep_deletes_leftover_data_and_old_runs(tmp_path: Path) -> None:
    service = _service(tmp_path)
    now = service._now()
    old = _run_folder(tmp_path, "run_20200101T000000_aaaaaa", "2020-01-01T01:00:00+00:00")
    crashed = _run_folder(tmp_path, "run_20261207T000000_bbbbbb", None)
    live = _run_folder(tmp_path, "run_20261207T000001_cccccc", None)
    (tmp_path / "m" / ".learning" / ".lock").write_text(live.name)  # another replica's run
    assert service.sweep() == {"data_files": 2 * len(DATA_FILES), "runs": 1}
    assert not old.exists()  # past learning_retention_days: record and rejected candidate
    assert not any((crashed / "train" / n).exists() for n in DATA_FILES)
    assert (crashed / "run.json").exists() and (crashed / "train/candidate/model.onnx").exists()
    assert all((live / "train" / n).exists() for n in DATA_FILES)  # running: untouched
    assert now  # the clock the cutoff is measured with


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_a_refreshed_lock_is_not_taken_over_and_a_stale_one_is(tmp_path: Path) -> None:
    one, two = _service(tmp_path), _service(tmp_path)
    (tmp_path / "m" / ".learning").mkdir(parents=True)
    lock = tmp_path / "m" / ".learning" / ".lock"
    assert one.records.lock("m", "run_one")
    _age(lock, 7200)  # a long run: older than the staleness limit ...
    one.records.refresh_lock("m", "run_one")  # ... but alive, so refreshed at each stage
    assert not two.records.lock("m", "run_two")
    assert lock.read_text() == "run_one"
    _age(lock, 7200)  # crashed: no refresh
    assert two.records.lock("m", "run_two")
    assert lock.read_text() == "run_two"
    assert [p.name for p in lock.parent.iterdir()] == [".lock"]  # nothing left aside
    one.records.refresh_lock("m", "run_one")  # not its lock any more: left alone
    assert not one.records.lock("m", "run_one")


def test_a_lock_replaced_during_a_takeover_is_put_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = _service(tmp_path)
    (tmp_path / "m" / ".learning").mkdir(parents=True)
    lock = tmp_path / "m" / ".learning" / ".lock"
    lock.write_text("run_old")
    _age(lock, 7200)
    rename = os.rename

    def others_first(source: Any, target: Any) -> None:  # another replica took it over
        Path(source).unlink()
        Path(source).write_text("run_other")
        rename(source, target)

    monkeypatch.setattr(run_lock.os, "rename", others_first)
    assert not service.records.lock("m", "run_mine")
    assert lock.read_text() == "run_other"  # its live lock is back in place


def test_a_text_matrix_comes_back_as_written(tmp_path: Path) -> None:
    manifest = parse_manifest(
        "m",
        {
            "runtime": "onnxruntime",
            "inputs": [{"name": "tags", "datatype": "BYTES", "shape": [-1, 2]},
                       {"name": "x", "datatype": "FP32", "shape": [-1, 1]}],
            "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]}],
        },
    )  # fmt: skip
    tags = np.array([["a", 'é\n"b'], ["", "c"]], dtype=object)
    x = np.array([[1.0], [2.0]], dtype=np.float32)
    write_job(tmp_path, manifest, {"tags": tags, "x": x}, np.array([0, 1]), {}, {}, 0)
    job = load_job(tmp_path)
    assert job.inputs["tags"].shape == (2, 2) and job.inputs["tags"].tolist() == tags.tolist()
    assert np.array_equal(job.inputs["x"], x)
