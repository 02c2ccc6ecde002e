"""The model repository reads manifests with libyaml's safe loader when PyYAML has it (a
node re-reads them at every heartbeat): the same manifests as the pure-Python loader, and
the same error message for a malformed file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from modelgate.errors import ModelgateError
from modelgate.repository import filesystem
from modelgate.repository.filesystem import FileModelRepository
from tests.conftest import FIXTURE_MODELS


@pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML built without libyaml")
def test_manifests_are_parsed_by_libyaml() -> None:
    assert filesystem._FAST_LOADER is yaml.CSafeLoader


def test_every_fixture_model_reads_the_same_with_either_loader(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repository = FileModelRepository(str(FIXTURE_MODELS))
    fast = {name: repository.versions(name) for name in repository.names()}
    monkeypatch.setattr(filesystem, "_FAST_LOADER", yaml.SafeLoader)
    plain = {name: repository.versions(name) for name in repository.names()}
    assert fast == plain
    assert len(fast) >= 4


def test_a_malformed_manifest_keeps_the_detailed_message(tmp_path: Path) -> None:
    shutil.copytree(FIXTURE_MODELS / "doubler", tmp_path / "doubler")
    (tmp_path / "doubler" / "model.yaml").write_text("runtime: python\ninputs: [1, 2\n")
    with pytest.raises(ModelgateError) as caught:
        FileModelRepository(str(tmp_path)).versions("doubler")
    try:
        yaml.safe_load("runtime: python\ninputs: [1, 2\n")
    except yaml.YAMLError as exc:
        expected = f"cannot read doubler/model.yaml: {exc}"
    assert caught.value.message == expected
    assert "^" in expected  # the pure-Python loader's snippet, which libyaml's lacks
    assert str(tmp_path) not in caught.value.message
