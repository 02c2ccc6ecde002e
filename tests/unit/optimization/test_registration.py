"""Registering a candidate is all or nothing: a refusal at validation leaves no version
folder and no staging folder behind."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from modelgate.core.serving.ports import VersionSource
from modelgate.optimization.registration import lineage_record, register_candidate
from modelgate.repository.filesystem import FileModelRepository


def _copy(demo_models: Path, tmp_path: Path) -> tuple[Path, VersionSource]:
    repository = tmp_path / "models"
    shutil.copytree(demo_models / "credit-risk", repository / "credit-risk")
    sources = FileModelRepository(str(repository)).versions("credit-risk")
    return repository, next(s for s in sources if s.version == 2)


def test_a_failed_validation_installs_nothing(demo_models: Path, tmp_path: Path) -> None:
    repository, source = _copy(demo_models, tmp_path)
    before = sorted(p.name for p in (repository / "credit-risk").iterdir())
    seen: list[str] = []

    def refuse(staged: VersionSource) -> None:
        seen.append(staged.path)
        assert (Path(staged.path) / "lineage.json").is_file()  # fully written when checked
        raise ValueError("the staged version answers wrongly")

    lineage = lineage_record(source, "graph-extended", {"agreement": 1.0})
    with pytest.raises(ValueError, match="answers wrongly"):
        register_candidate(repository, source, Path(source.path) / "model.onnx", lineage, refuse)
    assert seen and not Path(seen[0]).exists()
    assert sorted(p.name for p in (repository / "credit-risk").iterdir()) == before


def test_a_registered_version_is_listed_with_its_lineage(demo_models: Path, tmp_path: Path) -> None:
    repository, source = _copy(demo_models, tmp_path)
    lineage = lineage_record(source, "graph-extended", {"agreement": 1.0})
    number = register_candidate(
        repository, source, Path(source.path) / "model.onnx", lineage, lambda _: None
    )
    assert number == 3
    versions = FileModelRepository(str(repository)).versions("credit-risk")
    new = next(v for v in versions if v.version == 3)
    assert new.manifest.card["optimized_from"] == {
        "version": 2,
        "method": "graph-extended",
        "lineage": "lineage.json",
    }
    assert "validation_metrics" not in new.manifest.card  # the source's figures do not apply
    assert not [p for p in (repository / "credit-risk").iterdir() if p.name.startswith(".")]
