"""``runtime_options.allow_spinning`` reaches ONNX Runtime's session as its two config
entries; unset, the session keeps ONNX Runtime's default; a value that is not a boolean is a
manifest error that names the field (issue 11)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import onnxruntime as ort
import pytest
import yaml

from modelgate.core.serving.manifest import ModelManifest, parse_manifest
from modelgate.core.serving.registry import ModelRegistry
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.repository.filesystem import FileModelRepository
from modelgate.runtimes.catalog import loaders
from modelgate.runtimes.onnx import SPINNING_ENTRIES, create_session, session_options


def _manifest(demo_models: Path, model: str = "credit-risk", **options: Any) -> ModelManifest:
    data = yaml.safe_load((demo_models / model / "model.yaml").read_text())
    data["runtime_options"] = {**data.get("runtime_options", {}), **options}
    return parse_manifest(model, data)


def _entries(options: ort.SessionOptions) -> list[str | None]:
    found: list[str | None] = []
    for entry in SPINNING_ENTRIES:
        try:
            found.append(options.get_session_config_entry(entry))
        except RuntimeError:  # ONNX Runtime raises for a key never set
            found.append(None)
    return found


@pytest.mark.parametrize(("allow", "flag"), [(True, "1"), (False, "0")])
def test_allow_spinning_sets_both_thread_pools(demo_models: Path, allow: bool, flag: str) -> None:
    options = session_options(_manifest(demo_models, allow_spinning=allow, intra_op_threads=2))
    assert _entries(options) == [flag, flag]
    assert options.intra_op_num_threads == 2  # the other options are read as before


def test_without_allow_spinning_the_session_keeps_onnx_runtimes_default(
    demo_models: Path,
) -> None:
    assert _entries(session_options(_manifest(demo_models))) == [None, None]


@pytest.mark.parametrize("model", ["credit-risk", "all-MiniLM-L6-v2"])
def test_the_option_reaches_the_session_built(demo_models: Path, model: str) -> None:
    """Both ONNX runtimes (``onnxruntime`` and ``text-embedding``) build it here."""
    manifest = _manifest(demo_models, model, allow_spinning=False)
    version = manifest.default_version or 1
    session = create_session(str(demo_models / model / str(version) / "model.onnx"), manifest)
    assert _entries(session.get_session_options()) == ["0", "0"]


@pytest.mark.parametrize("value", ["yes", "false", 0, 1, 1.0, [True]])
def test_a_value_that_is_not_a_boolean_is_refused_naming_the_field(
    demo_models: Path, value: Any
) -> None:
    with pytest.raises(ModelgateError) as info:
        session_options(_manifest(demo_models, allow_spinning=value))
    assert info.value.kind is ErrorKind.INVALID_ARGUMENT
    assert "runtime_options.allow_spinning must be true or false" in info.value.message
    assert repr(value) in info.value.message


async def test_loading_a_model_with_a_bad_value_is_a_manifest_error(
    tmp_path: Path, demo_models: Path
) -> None:
    folder = tmp_path / "credit-risk"
    shutil.copytree(demo_models / "credit-risk", folder)
    manifest = yaml.safe_load((folder / "model.yaml").read_text())
    manifest.setdefault("runtime_options", {})["allow_spinning"] = "off"
    (folder / "model.yaml").write_text(yaml.safe_dump(manifest))
    registry = ModelRegistry(FileModelRepository(str(tmp_path)), loaders())
    try:
        with pytest.raises(ModelgateError) as info:
            await registry.acquire("credit-risk", None)
    finally:
        await registry.close()
    assert info.value.kind is ErrorKind.INVALID_ARGUMENT
    message = info.value.message
    assert "invalid manifest for model 'credit-risk'" in message
    assert "runtime_options.allow_spinning must be true or false, not 'off'" in message
    assert str(tmp_path) not in message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("intra_op_threads", "x"),
        ("intra_op_threads", -1),
        ("intra_op_threads", 10_000),
        ("intra_op_threads", True),
        ("inter_op_threads", 1.5),
        ("graph_optimization", "x"),
        ("graph_optimization", 3),
    ],
)
def test_bad_thread_counts_and_optimization_levels_are_refused_naming_the_field(
    demo_models: Path, field: str, value: Any
) -> None:
    with pytest.raises(ModelgateError) as info:
        session_options(_manifest(demo_models, **{field: value}))
    assert info.value.kind is ErrorKind.INVALID_ARGUMENT
    assert f"runtime_options.{field} must be" in info.value.message
    assert repr(value) in info.value.message


def test_zero_threads_leaves_the_pool_size_to_onnx_runtime(demo_models: Path) -> None:
    options = session_options(
        _manifest(demo_models, intra_op_threads=0, graph_optimization="basic")
    )
    assert options.intra_op_num_threads == 0
