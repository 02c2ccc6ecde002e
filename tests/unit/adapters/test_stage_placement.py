"""Which stages a node takes within its memory budget, and the repository it then serves
(cluster/stages.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from modelgate.cluster.stages import (
    StagedRepository,
    StageSlot,
    parse_node_stages,
    place_stages,
)
from modelgate.core.gateway.nodes import NodeInfo
from modelgate.core.serving.stages import stage_manifest
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.repository.filesystem import FileModelRepository
from modelgate.testing import StaticDirectory

slots = st.lists(
    st.builds(
        StageSlot,
        model=st.sampled_from(["a", "b"]),
        version=st.integers(1, 3),
        stage=st.integers(1, 4),
        size_bytes=st.integers(0, 1000),
    ),
    max_size=12,
    unique_by=lambda s: (s.model, s.version, s.stage),
)


@settings(max_examples=300, deadline=None)
@given(slots=slots, budget=st.one_of(st.none(), st.integers(0, 3000)), seed=st.integers(0, 5))
def test_a_node_takes_only_what_fits_and_leaves_out_only_what_does_not(
    slots: list[StageSlot], budget: int | None, seed: int
) -> None:
    held = {(s.model, s.version, s.stage): (i + seed) % 3 for i, s in enumerate(slots)}
    chosen = place_stages(slots, budget, held)
    size = {(s.model, s.version, s.stage): s.size_bytes for s in slots}
    used = sum(size[k] for k in chosen)
    if budget is None:
        assert chosen == set(size)
        return
    assert used <= budget
    for key in set(size) - chosen:  # each one left out fitted no longer when its turn came
        earlier = [k for k in chosen if (held[k], k) < (held[key], key)]
        assert size[key] > budget - sum(size[k] for k in earlier)


def test_the_stage_fewest_nodes_hold_goes_first() -> None:
    slots = [StageSlot("m", 2, 1, 55), StageSlot("m", 2, 2, 36)]
    assert place_stages(slots, 60, {}) == {("m", 2, 1)}
    assert place_stages(slots, 60, {("m", 2, 1): 1}) == {("m", 2, 2)}
    assert place_stages(slots, 100, {("m", 2, 1): 1}) == {("m", 2, 1), ("m", 2, 2)}
    assert place_stages(slots, 30, {}) == set()


@given(st.text(max_size=60))
def test_the_stages_setting_parses_or_names_its_bad_entry(text: str) -> None:
    problem: ModelgateError | None = None
    try:
        parsed = parse_node_stages(text)
    except ModelgateError as exc:
        problem, parsed = exc, None
    if problem is not None:
        assert problem.kind is ErrorKind.INVALID_ARGUMENT
        assert "MODELGATE_NODE_STAGES" in problem.message
    elif parsed is not None:
        assert all(numbers and min(numbers) >= 1 for numbers in parsed.values())


def test_the_stages_setting() -> None:
    assert parse_node_stages(None) is None and parse_node_stages(" ") is None
    assert parse_node_stages("m:1, m:2,x.y:3") == {"m": {1, 2}, "x.y": {3}}
    with pytest.raises(ModelgateError):
        parse_node_stages("m:0")


def _repository(root: Path) -> FileModelRepository:
    tensor = {"datatype": "FP32", "shape": [-1, 2]}
    model = root / "m"
    (model / "1").mkdir(parents=True)
    (model / "2" / "stage-1").mkdir(parents=True)
    (model / "2" / "stage-2").mkdir(parents=True)
    (model / "2" / "stage-1" / "model.onnx").write_bytes(b"x" * 40)
    (model / "2" / "stage-2" / "model.onnx").write_bytes(b"x" * 30)
    (model / "model.yaml").write_text(
        yaml.safe_dump(
            {
                "runtime": "onnxruntime",
                "inputs": [{"name": "x", **tensor}],
                "outputs": [{"name": "y", **tensor}],
            }
        )
    )
    stages = [
        {
            "artifact": "stage-1/model.onnx",
            "inputs": [{"name": "x", **tensor}],
            "outputs": [{"name": "h", **tensor}],
            "size_bytes": 40,
        },
        {
            "artifact": "stage-2/model.onnx",
            "inputs": [{"name": "h", **tensor}],
            "outputs": [{"name": "y", **tensor}],
            "size_bytes": 30,
        },
    ]
    (model / "2" / "version.yaml").write_text(yaml.safe_dump({"stages": stages}))
    return FileModelRepository(str(root))


def test_a_node_serves_its_stages_and_never_a_sharded_version_whole(tmp_path: Path) -> None:
    files = _repository(tmp_path)
    sharded = files.versions("m")[1].manifest
    other = NodeInfo("other", "o:1", stages={"m.stage1": {2: stage_manifest(sharded, 1)}})
    repository = StagedRepository(
        files, budget_bytes=50, directory=StaticDirectory([other]), node_id="me"
    )
    asyncio.run(repository.place())
    assert repository.held == {("m", 2, 2)}  # stage 1 is held elsewhere
    assert repository.names() == ["m", "m.stage2"]
    assert [s.version for s in repository.versions("m")] == [1]  # the whole version only
    (source,) = repository.versions("m.stage2")
    assert source.path.endswith("stage-2") and source.manifest.runtime == "stage"
    assert source.manifest.preload and source.manifest.runtime_options["stage"] == 2
    with pytest.raises(ModelgateError) as caught:
        repository.versions("m.stage1")
    assert caught.value.kind is ErrorKind.NOT_FOUND
    announced = repository.announcement()
    assert list(announced["stages"]) == ["m.stage2"]
    assert list(announced["sharded"]["m"]["versions"]) == ["2"]


def test_named_stages_over_the_budget_are_refused(tmp_path: Path) -> None:
    repository = StagedRepository(
        _repository(tmp_path), budget_bytes=50, wanted=parse_node_stages("m:1,m:2")
    )
    with pytest.raises(ModelgateError, match="over the node's memory budget"):
        asyncio.run(repository.place())


def test_an_all_in_one_server_serves_whole_versions_and_skips_sharded_ones(
    tmp_path: Path,
) -> None:
    repository = StagedRepository(_repository(tmp_path), budget_bytes=None, holds_stages=False)
    asyncio.run(repository.place())
    assert repository.held == set()
    assert repository.names() == ["m"]
    assert [s.version for s in repository.versions("m")] == [1]
    (tmp_path / "m" / "1").rmdir()  # only the sharded version is left: nothing to serve
    assert repository.names() == []
    with pytest.raises(ModelgateError, match="is sharded"):
        repository.versions("m")
