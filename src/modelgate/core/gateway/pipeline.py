"""A sharded model on a gateway: its stages run one after another, each on a node that
holds it (docs/scale-out.md, "Models larger than one node: sharding").

The gateway loads a sharded version (a manifest with ``stages``) as a
:class:`PipelineRuntime` instead of a :class:`~modelgate.core.gateway.remote.RemoteRuntime`:
clients see the model's own manifest (the first stage's inputs, the last stage's outputs)
over OIP and ``/v1``, and everything a gateway does before the runtime (validation, limits,
metering, merging of concurrent requests) is unchanged. Each stage is its own call through
:meth:`~modelgate.core.gateway.cluster.Cluster.forward`, to a node that announces the stage
(``model.stage<k>``, :mod:`modelgate.core.serving.stages`), so a stage has what a whole
model has: the choice of the least loaded replica, breakers per node and per (node, stage),
retries on another replica of the same stage within the caller's deadline and the retry
budget. The tensors travel as OIP gRPC binary tensors (``raw_input_contents``), each stage
fed the tensors its manifest names from the request's inputs and the earlier stages'
outputs, and each node batches its stage's calls in its own batcher.

The caller's deadline covers the whole pipeline: every stage's call gets what is left of
it. The answer reports the time spent in the stages (their sum) and the nodes that
answered, in stage order (``a+b``).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from modelgate.core.gateway.cluster import Cluster
from modelgate.core.serving.manifest import ModelManifest
from modelgate.core.serving.ports import Arrays, Timing
from modelgate.core.serving.stages import stage_model_name
from modelgate.errors import ErrorKind, ModelgateError

__all__ = ["PipelineRuntime"]


class PipelineRuntime:
    """One sharded model version: its stages in order, each on the nodes that hold it."""

    __slots__ = ("_feeds", "_outputs", "_stages", "cluster", "model", "prefer", "version")

    def __init__(self, cluster: Cluster, manifest: ModelManifest, version: int):
        if not manifest.stages:
            raise ValueError(f"model '{manifest.name}' has no stages")
        self.cluster = cluster
        self.model = manifest.name
        self.version = version
        self.prefer = manifest.hardware.prefer
        self._stages = [
            stage_model_name(manifest.name, number) for number in range(1, len(manifest.stages) + 1)
        ]
        self._feeds = [tuple(t.name for t in stage.inputs) for stage in manifest.stages]
        self._outputs = tuple(t.name for t in manifest.outputs)

    async def infer(
        self, inputs: Arrays, timing: Timing | None = None
    ) -> dict[str, np.ndarray[Any, Any]]:
        pool: dict[str, np.ndarray[Any, Any]] = dict(inputs)
        compute_ns = 0
        nodes: list[str] = []
        started = time.perf_counter_ns()
        for number, (stage, feeds) in enumerate(zip(self._stages, self._feeds, strict=True), 1):
            missing = [name for name in feeds if name not in pool]
            if missing:  # the manifest was checked: a node answered less than it declares
                raise ModelgateError(
                    ErrorKind.INTERNAL,
                    f"model '{self.model}' stage {number} lacks {missing} from earlier stages",
                )
            answer = await self.cluster.forward(
                stage,
                self.version,
                {name: pool[name] for name in feeds},
                timing,
                prefer=self.prefer,
            )
            pool.update(answer)
            if timing is not None:
                compute_ns += timing.compute_ns
                if timing.node is not None:
                    nodes.append(timing.node)
        if timing is not None:
            timing.compute_ns = compute_ns or time.perf_counter_ns() - started
            timing.node = "+".join(nodes) or None
        missing = [name for name in self._outputs if name not in pool]
        if missing:
            raise ModelgateError(
                ErrorKind.INTERNAL, f"model '{self.model}': its last stage did not answer {missing}"
            )
        return {name: pool[name] for name in self._outputs}

    @property
    def queue_depth(self) -> int:
        return 0

    def close(self) -> None:
        return None
