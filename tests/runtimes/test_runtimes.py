"""Each runtime loads a real artifact from a repository folder and answers like its library."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io as sio
import yaml
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from modelgate.core.serving.registry import ModelRegistry
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.repository.filesystem import FileModelRepository
from modelgate.runtimes.catalog import loaders
from modelgate.runtimes.onnx import providers_for


def _write_model(root: Path, name: str, manifest: dict[str, Any]) -> Path:
    folder = root / name / "1"
    folder.mkdir(parents=True)
    (root / name / "model.yaml").write_text(yaml.safe_dump(manifest))
    return folder


def _skops_manifest(**extra: Any) -> dict[str, Any]:
    return {
        "runtime": "skops",
        "artifact": "model.skops",
        "inputs": [{"name": "x", "datatype": "FP64", "shape": [-1, 4]}],
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP64", "shape": [-1, 2]},
        ],
        **extra,
    }


async def test_skops_model_answers_like_scikit_learn(tmp_path: Path) -> None:
    x, y = make_classification(n_samples=200, n_features=4, random_state=0)
    estimator = LogisticRegression().fit(x, y)
    folder = _write_model(tmp_path, "iris-like", _skops_manifest(batching={"max_batch_size": 16}))
    sio.dump(estimator, folder / "model.skops")
    registry = ModelRegistry(FileModelRepository(str(tmp_path)), loaders())
    loaded = await registry.acquire("iris-like", None)
    out = await loaded.runtime.infer({"x": x[:10]})
    np.testing.assert_array_equal(out["label"], estimator.predict(x[:10]))
    np.testing.assert_allclose(out["probabilities"], estimator.predict_proba(x[:10]))
    await registry.close()


async def test_skops_refuses_untrusted_types(tmp_path: Path) -> None:
    class Sneaky(LogisticRegression):
        pass

    x, y = make_classification(n_samples=50, n_features=4, random_state=0)
    folder = _write_model(tmp_path, "sneaky", _skops_manifest())
    Sneaky.__module__ = "evil"
    Sneaky.__qualname__ = "Sneaky"
    sio.dump(Sneaky().fit(x, y), folder / "model.skops")
    registry = ModelRegistry(FileModelRepository(str(tmp_path)), loaders())
    with pytest.raises(ModelgateError) as info:
        await registry.acquire("sneaky", None)
    assert info.value.kind is ErrorKind.INVALID_ARGUMENT
    assert "not trusted" in info.value.message


async def test_onnx_manifest_that_names_missing_tensors_fails_to_load(
    tmp_path: Path, demo_models: Path
) -> None:
    manifest = yaml.safe_load((demo_models / "credit-risk" / "model.yaml").read_text())
    manifest["outputs"][0]["name"] = "not-in-graph"
    folder = _write_model(tmp_path, "broken", manifest)
    (folder / "model.onnx").write_bytes(
        (demo_models / "credit-risk" / "1" / "model.onnx").read_bytes()
    )
    registry = ModelRegistry(FileModelRepository(str(tmp_path)), loaders())
    with pytest.raises(ModelgateError) as info:
        await registry.acquire("broken", None)
    assert "not-in-graph" in info.value.message


async def test_onnx_credit_risk_runs_inline_and_batches(demo_models: Path) -> None:
    registry = ModelRegistry(FileModelRepository(str(demo_models)), loaders())
    loaded = await registry.acquire("credit-risk", "1")
    assert not loaded.offload and loaded.batched
    out = await loaded.runtime.infer({"features": np.zeros((3, 12), np.float32)})
    assert out["probabilities"].shape == (3, 2) and out["label"].shape == (3,)
    await registry.close()


def test_providers_follow_the_manifest_and_the_machine(demo_models: Path) -> None:
    import onnxruntime as ort

    from modelgate.core.serving.manifest import parse_manifest

    base = yaml.safe_load((demo_models / "credit-risk" / "model.yaml").read_text())
    cpu = parse_manifest("m", base)
    assert providers_for(cpu) == ["CPUExecutionProvider"]
    gpu = parse_manifest("m", {**base, "hardware": {"prefer": "gpu"}})
    expected = (
        ["CUDAExecutionProvider", "CPUExecutionProvider"]
        if "CUDAExecutionProvider" in ort.get_available_providers()
        else ["CPUExecutionProvider"]
    )
    assert providers_for(gpu) == expected


@pytest.mark.parametrize(
    ("available", "chosen"),
    [
        (
            ["CUDAExecutionProvider", "CPUExecutionProvider"],
            ["CUDAExecutionProvider", "CPUExecutionProvider"],
        ),
        (["AzureExecutionProvider", "CPUExecutionProvider"], ["CPUExecutionProvider"]),
    ],
)
def test_a_gpu_preference_takes_cuda_when_onnx_runtime_offers_it_and_says_when_not(
    demo_models: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    available: list[str],
    chosen: list[str],
) -> None:
    """The GPU build's providers, or the CPU build's (installed beside the GPU build, it hides
    CUDA): a model that prefers a GPU gets CUDA first, or the CPU and a warning naming it."""
    import onnxruntime as ort

    from modelgate.core.serving.manifest import parse_manifest

    monkeypatch.setattr(ort, "get_available_providers", lambda: available)
    base = yaml.safe_load((demo_models / "credit-risk" / "model.yaml").read_text())
    gpu = parse_manifest("m", {**base, "hardware": {"prefer": "gpu"}})
    with caplog.at_level("WARNING", logger="modelgate.runtimes"):
        assert providers_for(gpu) == chosen
    warned = [r.getMessage() for r in caplog.records if r.name == "modelgate.runtimes"]
    if chosen[0] == "CUDAExecutionProvider":
        assert warned == []
    else:
        assert len(warned) == 1 and "'m' prefers a GPU" in warned[0]
        assert "AzureExecutionProvider, CPUExecutionProvider" in warned[0]
    caplog.clear()
    assert providers_for(parse_manifest("m", base)) == ["CPUExecutionProvider"]
    assert caplog.records == []  # a CPU model never asks


def test_manifest_errors_name_the_field(tmp_path: Path) -> None:
    _write_model(
        tmp_path,
        "bad",
        {
            "runtime": "onnxruntime",
            "inputs": [],
            "outputs": [{"name": "y", "datatype": "FP99", "shape": [-1]}],
        },
    )
    with pytest.raises(ModelgateError) as info:
        FileModelRepository(str(tmp_path)).versions("bad")
    assert "FP99" in info.value.message


@pytest.mark.parametrize("name", ["../etc", "a/b", ".hidden", ""])
def test_model_names_cannot_escape_the_repository(tmp_path: Path, name: str) -> None:
    with pytest.raises(ModelgateError) as info:
        FileModelRepository(str(tmp_path)).versions(name)
    assert info.value.kind is ErrorKind.NOT_FOUND
