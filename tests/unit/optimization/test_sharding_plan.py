"""Where ``modelgate shard`` cuts a graph, and what it refuses, on small ONNX graphs built
here (the MiniLM split itself is tests/e2e/test_sharding.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import yaml
from onnx import TensorProto, helper

from modelgate.core.serving.ports import VersionSource
from modelgate.errors import ModelgateError
from modelgate.optimization.sharding import plan_stages, shard_version
from modelgate.repository.filesystem import FileModelRepository


def _graph() -> onnx.ModelProto:
    """x -> Add -> h1 -> Mul(mask) -> h2 -> Mul(mask) -> y; the mask is made once from x
    (as a transformer's extended attention mask) and read by both later steps."""
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    nodes = [
        helper.make_node(
            "Constant", [], ["two"], value=helper.make_tensor("v", TensorProto.FLOAT, [], [2.0])
        ),
        helper.make_node("Add", ["x", "one"], ["h1"], name="add"),
        helper.make_node("Sigmoid", ["x"], ["mask"], name="mask"),
        helper.make_node("Mul", ["h1", "mask"], ["h2"], name="mul1"),
        helper.make_node("Mul", ["h2", "mask"], ["h3"], name="mul2"),
        helper.make_node("Mul", ["h3", "two"], ["y"], name="scale"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        initializer=[one],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_a_tensor_every_later_stage_reads_is_passed_along() -> None:
    stages = plan_stages(_graph().graph, ["h2"])
    assert [(s.inputs, s.outputs) for s in stages] == [
        (("x",), ("mask", "h2")),
        (("h2", "mask"), ("y",)),
    ]
    three = plan_stages(_graph().graph, ["h1", "h3"])
    # stage 2 makes the mask itself, from the model's input x, passed along to it
    assert [s.inputs for s in three] == [("x",), ("x", "h1"), ("h3",)]
    assert three[1].outputs == ("h3",)


@pytest.mark.parametrize(
    ("cuts", "problem"),
    [
        (["nope"], "has no tensor 'nope'"),
        (["x"], "input or a weight"),
        (["one"], "input or a weight"),
        (["y"], "output of the model"),
        (["h3", "h1"], "computed before cut 'h3'"),
        (["h1", "h1"], "named twice"),
        ([], "at least one tensor"),
        (["two"], "constants only"),
    ],
)
def test_cuts_that_do_not_split_the_graph_in_order_are_refused(
    cuts: list[str], problem: str
) -> None:
    with pytest.raises(ModelgateError) as caught:
        plan_stages(_graph().graph, cuts)
    assert problem in caught.value.message


def test_a_cut_on_a_side_branch_passes_the_models_input_along() -> None:
    first, second = plan_stages(_graph().graph, ["mask"])
    assert first.inputs == ("x",) and first.outputs == ("mask",)
    assert second.inputs == ("x", "mask")  # the main path starts again from x


def test_shard_installs_stages_that_answer_as_the_whole_model(tmp_path: Path) -> None:
    model = tmp_path / "g"
    (model / "1").mkdir(parents=True)
    onnx.save(_graph(), str(model / "1" / "model.onnx"))
    manifest = {
        "runtime": "onnxruntime",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}],
        "batching": {"max_batch_size": 8},
    }
    (model / "model.yaml").write_text(yaml.safe_dump(manifest))
    source = FileModelRepository(str(tmp_path)).versions("g")[0]
    x = np.linspace(-2, 2, 12, dtype=np.float32).reshape(4, 3)
    number, entries = shard_version(tmp_path, source, ["h2"], {"x": x})
    assert number == 2
    staged = FileModelRepository(str(tmp_path)).versions("g")[1]
    assert [s.artifact for s in staged.manifest.stages] == [
        "stage-1/model.onnx",
        "stage-2/model.onnx",
    ]
    assert [t.name for t in staged.manifest.stages[1].inputs] == ["h2", "mask"]
    lineage = (model / "2" / "lineage.json").read_text()
    assert '"origin": "sharding"' in lineage and '"min_cosine_to_whole": 1.0' in lineage
    first = ort.InferenceSession(str(model / "2" / "stage-1" / "model.onnx"))
    second = ort.InferenceSession(str(model / "2" / "stage-2" / "model.onnx"))
    h2, mask = first.run(["h2", "mask"], {"x": x})
    (y,) = second.run(["y"], {"h2": h2, "mask": mask})
    whole = ort.InferenceSession(str(model / "1" / "model.onnx")).run(["y"], {"x": x})[0]
    np.testing.assert_allclose(y, whole, rtol=1e-6)
    assert entries[0]["size_bytes"] == (model / "2" / "stage-1" / "model.onnx").stat().st_size


def test_a_failed_check_installs_nothing(tmp_path: Path) -> None:
    model = tmp_path / "g"
    (model / "1").mkdir(parents=True)
    onnx.save(_graph(), str(model / "1" / "model.onnx"))
    manifest = {
        "runtime": "onnxruntime",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}],
    }
    (model / "model.yaml").write_text(yaml.safe_dump(manifest))
    source = FileModelRepository(str(tmp_path)).versions("g")[0]
    wrong = VersionSource(1, source.path, source.manifest)
    with pytest.raises(ValueError, match="cosine"):
        # a bar no float model passes: the check runs and refuses
        shard_version(tmp_path, wrong, ["h2"], {"x": np.ones((2, 3), np.float32)}, min_cosine=1.5)
    assert sorted(p.name for p in model.iterdir()) == ["1", "model.yaml"]
