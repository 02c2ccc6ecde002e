"""The stages of a sharded model as units a node loads (docs/scale-out.md, "Models larger
than one node: sharding").

A sharded version's manifest lists its ``stages`` (:class:`~.manifest.StageSpec`):
consecutive ONNX sub-graphs, each in a folder of its own inside the version folder. A node
serves stage ``k`` of model ``m`` as a model of its own, named :func:`stage_model_name`
(``m.stage2``), with the manifest :func:`stage_manifest` derives: the stage's file and
tensors, the model's batching (so batching happens per stage, in each node's batcher),
and the ``stage`` runtime, which for a ``text-embedding`` model tokenizes in the first
stage and pools in the last (``runtime_options``). The gateway runs the stages in order
(:mod:`modelgate.core.gateway.pipeline`) and shows clients the model's own manifest.
"""

from __future__ import annotations

import re
from typing import Any

from modelgate.core.serving.manifest import ModelManifest, StageSpec

__all__ = [
    "STAGE_OPTIONS",
    "parse_stage_model_name",
    "stage_manifest",
    "stage_model_name",
]

#: what the ``stage`` runtime reads of ``runtime_options`` beside the model's own options
STAGE_OPTIONS = ("stage", "stages", "base_runtime", "embedding", "max_tokens_per_text")
_STAGE_NAME = re.compile(r"^(?P<model>.+)\.stage(?P<number>[1-9][0-9]{0,2})$")


def stage_model_name(model: str, number: int) -> str:
    """The name a node serves stage ``number`` (from 1) of ``model`` under."""
    return f"{model}.stage{number}"


def parse_stage_model_name(name: str) -> tuple[str, int] | None:
    """``(model, number)`` of a stage's name; None for any other name."""
    found = _STAGE_NAME.fullmatch(name)
    if found is None:
        return None
    return found["model"], int(found["number"])


def _batchable(stage: StageSpec) -> bool:
    return all(t.shape and t.shape[0] == -1 for t in (*stage.inputs, *stage.outputs))


def stage_manifest(manifest: ModelManifest, number: int) -> ModelManifest:
    """The manifest a node loads stage ``number`` (from 1) of the sharded ``manifest``
    with: preloaded (a node holds the stages it was placed with), batched as the model is."""
    stage = manifest.stages[number - 1]
    options: dict[str, Any] = {
        **manifest.runtime_options,
        "stage": number,
        "stages": len(manifest.stages),
        "base_runtime": manifest.runtime,
    }
    if manifest.embedding is not None:
        options["embedding"] = manifest.embedding.model_dump(mode="json")
        # the whole model's runtime cuts texts at this many tokens (the gateway refused
        # longer ones where the manifest does not truncate)
        options["max_tokens_per_text"] = manifest.limits.max_tokens_per_text
    limits = manifest.limits
    return ModelManifest(
        name=stage_model_name(manifest.name, number),
        runtime="stage",
        preload=True,
        artifact=stage.artifact,
        inputs=stage.inputs,
        outputs=stage.outputs,
        batching=manifest.batching if _batchable(stage) else None,
        execution=manifest.execution,
        instances=manifest.instances,
        hardware=manifest.hardware,
        runtime_options=options,
        labels={**manifest.labels, "stage_of": manifest.name},
        limits=limits.model_copy(update={"max_tokens_per_text": None, "max_total_tokens": None}),
        card={"stage_of": manifest.name, "stage": number, "stages": len(manifest.stages)},
    )
