"""``modelgate shard``: one ONNX model version split at named tensors into consecutive stage
graphs, installed as the next version with ``stages`` in its manifest and its lineage.

**Where each node goes.** Stage ``k`` holds the nodes needed to compute cut tensor ``k``
(the model's outputs, for the last stage) that no earlier stage holds. Its inputs are the
tensors those nodes read and do not make: the model's inputs or earlier stages' outputs.
So a tensor that every layer reads, such as a transformer's attention mask (MiniLM makes its
extended mask once, before the first layer), is passed along from the stage that made it to
every stage that reads it, and an original model input a later stage reads is handed to it
too. ``Constant`` nodes are copied into every stage that reads them rather than passed.
The stage files themselves are cut with the ONNX library's own tool
(:class:`onnx.utils.Extractor`), and each is checked to hold exactly its stage's nodes.

**What is refused**, with the reason: a cut tensor the graph lacks, one that is a model
input, output or initializer, cuts out of order (a cut computed before the previous one) or
one that leaves a stage empty, a model output made before the last stage, and a version
whose stages do not answer what the whole model answers on its reference inputs (cosine
under ``min_cosine``, or a label that differs).

**Text-embedding models** (MiniLM): the graph's inputs are the tokenizer's (``input_ids``,
``attention_mask``, ``token_type_ids``), so the first stage takes the model's ``text`` and
tokenizes it (the ``stage`` runtime, runtimes/stage.py), and hands ``attention_mask`` on to
the last stage, which pools the hidden states into ``embedding`` and ``token_count``.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.utils
import yaml

from modelgate import __version__
from modelgate.core.serving.ports import VersionSource
from modelgate.errors import invalid
from modelgate.repository import lineage as versions_lineage
from modelgate.repository.filesystem import VERSION_MANIFEST
from modelgate.repository.lineage import LINEAGE_FILE, file_digest, started_by, write_lineage
from modelgate.repository.versions import install_version

__all__ = ["StagePlan", "check_stages", "plan_stages", "shard_version"]

STAGE_FILE = "model.onnx"
STAGING_PREFIX = ".staging-shard-"
#: the tokenizer's tensors: what a text-embedding model's first stage makes from ``text``
_TOKENIZER_TENSORS = ("input_ids", "attention_mask", "token_type_ids")
_ATTENTION_MASK = "attention_mask"
_DATATYPES: dict[int, str] = {
    onnx.TensorProto.FLOAT: "FP32",
    onnx.TensorProto.FLOAT16: "FP16",
    onnx.TensorProto.DOUBLE: "FP64",
    onnx.TensorProto.INT64: "INT64",
    onnx.TensorProto.INT32: "INT32",
    onnx.TensorProto.INT16: "INT16",
    onnx.TensorProto.INT8: "INT8",
    onnx.TensorProto.UINT8: "UINT8",
    onnx.TensorProto.BOOL: "BOOL",
}


@dataclass(frozen=True)
class StagePlan:
    """One stage: the graph tensors it reads and answers, and its node indexes."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    nodes: frozenset[int]


def plan_stages(graph: onnx.GraphProto, cuts: Sequence[str]) -> list[StagePlan]:
    """The stages ``cuts`` split ``graph`` into (see the module docstring);
    INVALID_ARGUMENT naming the problem when they do not."""
    if not cuts:
        raise invalid("name at least one tensor to cut at (--at)")
    if len(set(cuts)) != len(cuts):
        raise invalid(f"a tensor is named twice in {list(cuts)}")
    producer = {out: i for i, node in enumerate(graph.node) for out in node.output if out}
    initializers = {t.name for t in graph.initializer}
    model_inputs = [i.name for i in graph.input if i.name not in initializers]
    model_outputs = [o.name for o in graph.output]
    constants = {i for i, node in enumerate(graph.node) if node.op_type == "Constant"}
    for cut in cuts:
        if cut in model_inputs or cut in initializers:
            raise invalid(f"'{cut}' is an input or a weight of the model, not a tensor to cut at")
        if cut in model_outputs:
            raise invalid(f"'{cut}' is an output of the model: nothing would follow the cut")
        if cut not in producer:
            raise invalid(f"the model has no tensor '{cut}'")

    def needed(targets: Sequence[str]) -> set[int]:
        seen: set[int] = set()
        stack = list(targets)
        while stack:
            index = producer.get(stack.pop())
            if index is None or index in seen:
                continue
            seen.add(index)
            stack.extend(graph.node[index].input)
        return seen

    taken: set[int] = set()
    groups: list[set[int]] = []
    targets = [[cut] for cut in cuts] + [model_outputs]
    for number, wanted in enumerate(targets, 1):
        group = needed(wanted) - taken - constants
        if not group:
            what = f"cut '{wanted[0]}'" if number <= len(cuts) else "the model's outputs"
            if number == 1:
                raise invalid(f"{what} is made of constants only: nothing to cut before it")
            raise invalid(
                f"{what} is computed before cut '{cuts[number - 2]}': name the cuts in graph "
                "order, each one after the previous"
            )
        groups.append(group)
        taken |= group
    made = [{out for i in group for out in graph.node[i].output if out} for group in groups]
    for name in model_outputs:
        if name not in made[-1]:
            raise invalid(f"model output '{name}' is computed before the last cut")
    reads: list[list[str]] = []
    for group, own in zip(groups, made, strict=True):
        outside = []
        for i in sorted(group):
            for name in graph.node[i].input:
                if not name or name in own or name in initializers or name in outside:
                    continue
                if producer.get(name) in constants:
                    continue
                outside.append(name)
        reads.append(outside)
    plans = []
    for number, group in enumerate(groups):
        later = {name for stage in reads[number + 1 :] for name in stage}
        for name in reads[number]:
            if name not in model_inputs and not any(name in m for m in made[:number]):
                raise invalid(f"stage {number + 1} reads '{name}', which no earlier stage makes")
        if number < len(cuts):
            outputs = [n for i in sorted(group) for n in graph.node[i].output if n in later]
            if cuts[number] not in outputs:
                raise invalid(
                    f"no later stage reads cut '{cuts[number]}': it does not split the model"
                )
        else:
            outputs = list(model_outputs)
        plans.append(
            StagePlan(tuple(reads[number]), tuple(dict.fromkeys(outputs)), frozenset(group))
        )
    return plans


def _tensor_spec(value: onnx.ValueInfoProto) -> dict[str, Any]:
    tensor = value.type.tensor_type
    datatype = _DATATYPES.get(tensor.elem_type)
    if datatype is None or not tensor.HasField("shape"):
        raise invalid(f"tensor '{value.name}' has no type and shape the stages can declare")
    shape = [
        d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in tensor.shape.dim
    ]
    # an activation between stages, not a caller's input: masks hold -inf or the
    # float minimum, and the gateway already checked what the caller sent
    return {"name": value.name, "datatype": datatype, "shape": shape, "allow_nonfinite": True}


def _extract(
    model_path: Path, graph: onnx.GraphProto, plans: list[StagePlan], staging: Path
) -> list[dict[str, Any]]:
    """Write each stage's graph into ``staging/stage-<k>/model.onnx`` with
    :func:`onnx.utils.extract_model` (checked, shapes inferred); each stage's graph tensors
    as manifest tensor specs. A stage file holding other nodes than its plan's is refused."""
    described = []
    for number, plan in enumerate(plans, 1):
        folder = staging / f"stage-{number}"
        folder.mkdir()
        target = folder / STAGE_FILE
        try:
            onnx.utils.extract_model(
                str(model_path), str(target), list(plan.inputs), list(plan.outputs)
            )
        except (ValueError, onnx.checker.ValidationError) as exc:
            raise invalid(f"stage {number} cannot be cut out: {exc}") from None
        stage = onnx.load(str(target), load_external_data=False)
        got = {n.output[0] for n in stage.graph.node if n.op_type != "Constant"}
        if got != {graph.node[i].output[0] for i in plan.nodes}:
            raise invalid(f"stage {number} does not separate from the rest of the graph")
        described.append(
            {
                "inputs": [_tensor_spec(v) for v in stage.graph.input],
                "outputs": [_tensor_spec(v) for v in stage.graph.output],
            }
        )
    return described


def _stage_entries(
    manifest_data: dict[str, Any], runtime: str, graphs: list[dict[str, Any]], staging: Path
) -> list[dict[str, Any]]:
    """The manifest's ``stages``: for a text-embedding model the first stage takes the
    model's inputs and makes the tokenizer's tensors later stages read, and the last stage
    answers the model's outputs (pooled)."""
    stages = []
    last = len(graphs)
    wanted_later: set[str] = set()
    for graph in graphs[1:]:
        wanted_later.update(t["name"] for t in graph["inputs"])
    for number, graph in enumerate(graphs, 1):
        inputs, outputs = list(graph["inputs"]), list(graph["outputs"])
        if runtime == "text-embedding":
            if number == 1:
                inputs = list(manifest_data["inputs"])
                handed = {t["name"] for t in outputs}
                for name in _TOKENIZER_TENSORS:
                    if (name in wanted_later or name == _ATTENTION_MASK) and name not in handed:
                        outputs.append({"name": name, "datatype": "INT64", "shape": [-1, -1]})
            if number == last:
                if _ATTENTION_MASK not in {t["name"] for t in inputs}:
                    inputs.append({"name": _ATTENTION_MASK, "datatype": "INT64", "shape": [-1, -1]})
                outputs = list(manifest_data["outputs"])
        elif number == last:
            outputs = list(manifest_data["outputs"])
        folder = staging / f"stage-{number}"
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        stages.append(
            {
                "artifact": f"stage-{number}/{STAGE_FILE}",
                "inputs": inputs,
                "outputs": outputs,
                "size_bytes": size,
            }
        )
    return stages


def _spec_data(source: VersionSource) -> dict[str, Any]:
    return source.manifest.model_dump(
        mode="json", include={"inputs", "outputs"}, exclude_defaults=True
    )


def check_stages(
    whole: VersionSource, staged: VersionSource, inputs: Mapping[str, Any], min_cosine: float
) -> dict[str, float]:
    """Run the whole version and the staged one (its stages in order, in this process,
    through the server's runtimes) on ``inputs``; ValueError when an output differs (a
    float output's worst row cosine under ``min_cosine``, any other output not equal).
    Returns the comparison's numbers for the lineage."""
    from modelgate.core.serving.stages import stage_manifest
    from modelgate.runtimes.catalog import loaders

    runtimes = loaders()
    predictor = runtimes[whole.manifest.runtime](whole)
    try:
        expected = predictor.predict(inputs)
    finally:
        predictor.close()
    pool: dict[str, Any] = dict(inputs)
    for number, stage in enumerate(staged.manifest.stages, 1):
        folder = Path(staged.path) / Path(stage.artifact).parent
        source = VersionSource(staged.version, str(folder), stage_manifest(staged.manifest, number))
        part = runtimes["stage"](source)
        try:
            pool.update(part.predict({t.name: pool[t.name] for t in stage.inputs}))
        finally:
            part.close()
    worst, largest = 1.0, 0.0
    for spec in whole.manifest.outputs:
        want, got = np.asarray(expected[spec.name]), np.asarray(pool[spec.name])
        if want.shape != got.shape:
            raise ValueError(f"output '{spec.name}' has shape {got.shape}, not {want.shape}")
        if want.dtype.kind != "f":
            if not np.array_equal(want, got):
                raise ValueError(f"output '{spec.name}' differs from the whole model's")
            continue
        a, b = want.reshape(len(want), -1), got.reshape(len(got), -1)
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        cosine = np.sum(a * b, axis=1) / np.clip(norms, 1e-12, None)
        worst = min(worst, float(cosine.min()))
        largest = max(largest, float(np.abs(a - b).max()))
    if worst < min_cosine:
        raise ValueError(f"the stages' worst row cosine to the whole model is {worst:.6f}")
    return {"min_cosine_to_whole": round(worst, 6), "max_abs_diff_to_whole": largest}


def shard_version(
    repository: Path,
    source: VersionSource,
    cuts: Sequence[str],
    inputs: Mapping[str, Any],
    *,
    min_cosine: float = 0.9999,
) -> tuple[int, list[dict[str, Any]]]:
    """Split ``source`` at ``cuts`` and install the stages as the next version; returns its
    number and its ``stages`` entries. Nothing is installed when a check fails."""
    manifest = source.manifest
    if manifest.runtime not in ("onnxruntime", "text-embedding"):
        raise invalid(f"only ONNX models can be sharded, not runtime '{manifest.runtime}'")
    if manifest.stages:
        raise invalid(f"version {source.version} of '{manifest.name}' is sharded already")
    artifact = Path(source.path) / manifest.artifact
    graph = onnx.load(str(artifact), load_external_data=False).graph
    plans = plan_stages(graph, cuts)
    entries: list[dict[str, Any]] = []
    measured: dict[str, float] = {}

    def assemble(staging: Path) -> None:
        original = Path(source.path)
        for entry in original.iterdir():
            if entry.name in (VERSION_MANIFEST, LINEAGE_FILE, manifest.artifact):
                continue
            if entry.is_dir():
                shutil.copytree(entry, staging / entry.name)
            else:
                shutil.copy2(entry, staging / entry.name)
        graphs = _extract(artifact, graph, plans, staging)
        entries.extend(_stage_entries(_spec_data(source), manifest.runtime, graphs, staging))
        version_data: dict[str, Any] = {}
        if (original / VERSION_MANIFEST).is_file():
            version_data = yaml.safe_load((original / VERSION_MANIFEST).read_text("utf-8")) or {}
        card = dict(version_data.get("card") or {})
        card["sharded_from"] = {
            "version": source.version,
            "at": list(cuts),
            "lineage": LINEAGE_FILE,
        }
        version_data["card"] = card
        version_data["stages"] = entries
        header = "# Written by `modelgate shard`; see lineage.json.\n"
        (staging / VERSION_MANIFEST).write_text(
            header + yaml.safe_dump(version_data, sort_keys=False), encoding="utf-8"
        )

    def validate(staged: VersionSource) -> None:
        measured.update(check_stages(source, staged, inputs, min_cosine))
        record = versions_lineage.lineage_record(
            origin="sharding",
            artifact=Path(staged.path) / entries[0]["artifact"],
            builder={"name": "modelgate shard", "version": __version__, "at": list(cuts)},
            parent={
                "model": manifest.name,
                "version": source.version,
                "relation": "shard",
                "artifact": file_digest(artifact),
            },
            evaluation={
                "against": f"version {source.version}, on its reference inputs",
                "metrics": dict(measured),
                "stages": [
                    {"artifact": e["artifact"], **file_digest(Path(staged.path) / e["artifact"])}
                    for e in entries
                ],
            },
            by=started_by(),
        )
        write_lineage(staged.path, record)

    number = install_version(
        repository / manifest.name, assemble, validate, staging_prefix=STAGING_PREFIX
    )
    return number, entries
