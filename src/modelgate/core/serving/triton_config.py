"""A Triton model configuration in a load's ``parameters.config``, mapped onto the override
a load may make (core/serving/overrides.py).

tritonclient's ``load_model(config=...)`` sends Triton's ``model_config.proto`` as JSON. A
config that sets any of Triton's own fields is read as one: the fields that mean something
modelgate has are mapped, the model's name, platform, backend and tensors are accepted when
they say what the manifest says (a load cannot change the signature), and everything else is
refused with INVALID_ARGUMENT listing every such field at once::

    max_batch_size                        batching.max_batch_size (0: batching null)
    dynamic_batching
      max_queue_delay_microseconds        batching.max_queue_delay_us
      default_queue_policy.max_queue_size batching.max_queue_size
      preferred_batch_size                only [max_batch_size]: modelgate fills batches up
                                          to max_batch_size and knows no other sizes
    instance_group [{count, kind, name}]  instances (the counts added), hardware.prefer
                                          (KIND_CPU: cpu, KIND_GPU: gpu; one kind only)
    version_policy                        {all: {}} | {latest: {num_versions: N}} |
                                          {specific: {versions: [...]}}
    name, platform, backend, parameters   must match the model's (parameters: its labels,
                                          as the config route answers them)
    input, output [{name, data_type, dims}]  must match the manifest's tensor of that name;
                                          dims leave out the batch dimension when
                                          max_batch_size > 0, as in Triton

So what the model configuration route (``GET /v2/models/{m}/config``, gRPC ``ModelConfig``)
answers loads back as it is, and a change to its batching or instance fields applies.
modelgate's own override fields (``batching``, ``instances``, ``execution``, ``hardware``)
may sit beside them; a field set both ways (``batching`` and ``max_batch_size``) is refused.
A config with none of Triton's fields is left as it is. Triton writes 64-bit integers as
JSON strings (protobuf's JSON mapping), so a string of digits is read as the number.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelgate.core.serving.manifest import ModelManifest, TensorSpec
from modelgate.core.serving.overrides import OVERRIDABLE
from modelgate.errors import invalid

__all__ = ["TRITON_FIELDS", "triton_override"]

#: the top-level fields of Triton's ModelConfig (model_config.proto); ``runtime`` and
#: ``version_policy`` are left out: a modelgate override may name them too
TRITON_FIELDS = frozenset(
    {
        "backend", "batch_input", "batch_output", "cc_model_filenames",
        "default_model_filename", "dynamic_batching", "ensemble_scheduling", "input",
        "instance_group", "max_batch_size", "metric_tags", "model_metrics",
        "model_operations", "model_repository_agents", "model_transaction_policy",
        "model_warmup", "name", "optimization", "output", "parameters", "platform",
        "response_cache", "sequence_batching",
    }
)  # fmt: skip
_BACKENDS = {"onnxruntime": "onnxruntime", "text-embedding": "onnxruntime", "python": "python"}
_KINDS = {"KIND_CPU": "cpu", "KIND_GPU": "gpu", "KIND_AUTO": None}
_TENSOR_KEYS = frozenset({"name", "data_type", "dims"})


def triton_override(config: Mapping[str, Any], manifest: ModelManifest) -> dict[str, Any]:
    """The override ``config`` amounts to for the model of ``manifest``: as it is when it
    sets none of Triton's fields; INVALID_ARGUMENT listing every field that does not map."""
    if not any(key in TRITON_FIELDS for key in config):
        return dict(config)
    mapping = _Mapping(config, manifest)
    mapping.run()
    if mapping.problems:
        raise invalid(
            "this Triton model configuration cannot be applied: "
            + "; ".join(mapping.problems)
            + ". modelgate maps max_batch_size, dynamic_batching.max_queue_delay_microseconds,"
            " dynamic_batching.default_queue_policy.max_queue_size, instance_group (count,"
            " kind) and version_policy, and accepts name, platform, backend, parameters,"
            " input and output where they match the model (docs/model-repository.md)"
        )
    return mapping.override


class _Mapping:
    def __init__(self, config: Mapping[str, Any], manifest: ModelManifest):
        self.config = config
        self.manifest = manifest
        self.override: dict[str, Any] = {}
        self.problems: list[str] = []
        self.batching: dict[str, Any] = {}

    def run(self) -> None:
        config = self.config
        for key in sorted(config, key=str):
            value = config[key]
            if key in ("name", "platform", "backend", "parameters"):
                self._same(key, value)
            elif key in ("max_batch_size", "dynamic_batching", "input", "output"):
                continue  # below, together
            elif key == "instance_group":
                self._instances(value)
            elif key == "version_policy":
                self.override["version_policy"] = self._version_policy(value)
            elif key in OVERRIDABLE:
                self.override[key] = value
            else:
                self.problems.append(f"'{key}' is not supported")
        max_batch = self._batching()
        for key in ("input", "output"):
            if key in config:
                self._tensors(key, config[key], max_batch)

    def _same(self, key: str, value: Any) -> None:
        manifest = self.manifest
        ours: tuple[Any, ...] = {
            "name": (manifest.name,),
            "platform": (manifest.platform,),
            # Triton's backend name, or the runtime (what the config route answers)
            "backend": (_BACKENDS.get(manifest.runtime, manifest.runtime), manifest.runtime),
            # the labels, as the config route answers them
            "parameters": ({k: {"string_value": str(v)} for k, v in manifest.labels.items()},),
        }[key]
        if value not in ours:
            self.problems.append(f"'{key}' is {value!r}, the model's is {ours[0]!r}")

    def _batching(self) -> int:
        """Map max_batch_size and dynamic_batching; the batch size the tensors' dims assume."""
        config = self.config
        current = self.manifest.batching
        max_batch = current.max_batch_size if current is not None else 0
        if "max_batch_size" in config:
            number = self._integer("max_batch_size", config["max_batch_size"])
            if number is not None:
                max_batch = number
                if number > 0:
                    self.batching["max_batch_size"] = number
        dynamic = config.get("dynamic_batching")
        if dynamic is not None:
            self._dynamic(dynamic, max_batch)
        if ("max_batch_size" in config or dynamic is not None) and "batching" in config:
            self.problems.append("set 'batching' or Triton's batching fields, not both")
        elif "max_batch_size" in config and max_batch == 0:
            self.override["batching"] = None
        elif self.batching:
            self.override["batching"] = self.batching
        return max_batch

    def _dynamic(self, dynamic: Any, max_batch: int) -> None:
        if not isinstance(dynamic, Mapping):
            self.problems.append("'dynamic_batching' must be an object")
            return
        if max_batch == 0:
            self.problems.append("'dynamic_batching' needs max_batch_size > 0")
        for key in sorted(dynamic, key=str):
            value = dynamic[key]
            if key == "max_queue_delay_microseconds":
                delay = self._integer(f"dynamic_batching.{key}", value)
                if delay is not None:
                    self.batching["max_queue_delay_us"] = delay
            elif key == "preferred_batch_size":
                sizes = value if isinstance(value, list) else [value]
                wanted = [self._integer(f"dynamic_batching.{key}", s) for s in sizes]
                if wanted not in ([], [max_batch]):
                    self.problems.append(
                        f"'dynamic_batching.{key}' {sizes} is not supported: modelgate fills "
                        f"batches up to max_batch_size ({max_batch}) and knows no other sizes"
                    )
            elif key == "default_queue_policy" and isinstance(value, Mapping):
                for inner in sorted(value, key=str):
                    if inner == "max_queue_size":
                        size = self._integer(f"dynamic_batching.{key}.{inner}", value[inner])
                        if size is not None:
                            self.batching["max_queue_size"] = size
                    else:
                        self.problems.append(f"'dynamic_batching.{key}.{inner}' is not supported")
            else:
                self.problems.append(f"'dynamic_batching.{key}' is not supported")

    def _instances(self, groups: Any) -> None:
        if not isinstance(groups, list) or not all(isinstance(g, Mapping) for g in groups):
            self.problems.append("'instance_group' must be a list of objects")
            return
        if "instances" in self.config or "hardware" in self.config:
            self.problems.append("set 'instances' and 'hardware' or 'instance_group', not both")
        count, kinds = 0, set()
        for group in groups:
            for key in sorted(group, key=str):
                if key not in ("count", "kind", "name"):
                    self.problems.append(f"'instance_group.{key}' is not supported")
            number = self._integer("instance_group.count", group.get("count", 1))
            count += number or 0
            kind = group.get("kind", "KIND_AUTO")
            if not isinstance(kind, str) or kind not in _KINDS:
                self.problems.append(f"'instance_group.kind' {kind!r} is not supported")
            elif _KINDS[kind] is not None:
                kinds.add(_KINDS[kind])
        if len(kinds) > 1:
            self.problems.append("'instance_group' mixes KIND_CPU and KIND_GPU")
        elif kinds:
            self.override["hardware"] = {"prefer": kinds.pop()}
        if count:
            self.override["instances"] = count

    def _version_policy(self, policy: Any) -> Any:
        """Triton's policy as the manifest writes it; modelgate's own form is kept."""
        if isinstance(policy, Mapping) and len(policy) == 1:
            ((kind, value),) = policy.items()
            if kind == "all" and value in ({}, None):
                return "all"
            if kind == "latest" and isinstance(value, Mapping) and "num_versions" in value:
                return {"latest": self._integer("version_policy", value["num_versions"])}
            if kind == "specific" and isinstance(value, Mapping) and "versions" in value:
                versions = value["versions"]
                if isinstance(versions, list):
                    return {"specific": [self._integer("version_policy", v) for v in versions]}
        return policy  # the manifest's forms, validated where it is applied

    def _tensors(self, key: str, tensors: Any, max_batch: int) -> None:
        if not isinstance(tensors, list) or not all(isinstance(t, Mapping) for t in tensors):
            self.problems.append(f"'{key}' must be a list of objects")
            return
        for tensor in tensors:
            name = tensor.get("name")
            ours = (self.manifest.input if key == "input" else self.manifest.output)(str(name))
            if ours is None:
                self.problems.append(f"the model has no {key} {name!r}")
                continue
            for field in sorted(tensor, key=str):
                if field not in _TENSOR_KEYS:
                    self.problems.append(f"'{key}.{field}' ({name}) is not supported")
            self._same_tensor(key, tensor, ours, max_batch)

    def _same_tensor(
        self, key: str, tensor: Mapping[str, Any], ours: TensorSpec, max_batch: int
    ) -> None:
        if "data_type" in tensor:
            wanted = _datatype(tensor["data_type"])
            if wanted != ours.datatype:
                self.problems.append(
                    f"{key} '{ours.name}' data_type {tensor['data_type']!r} is not the "
                    f"model's {ours.datatype}"
                )
        if "dims" in tensor:
            dims = tensor["dims"]
            numbers = (
                [self._integer(f"{key}.dims", d) for d in dims] if isinstance(dims, list) else None
            )
            shape = [-1, *numbers] if numbers is not None and max_batch > 0 else numbers
            if shape != list(ours.shape):
                self.problems.append(
                    f"{key} '{ours.name}' dims {dims} (max_batch_size {max_batch}) are not the "
                    f"model's shape {list(ours.shape)}"
                )

    def _integer(self, field: str, value: Any) -> int | None:
        if isinstance(value, str) and value.lstrip("-").isdigit():
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        self.problems.append(f"'{field}' must be an integer, not {value!r}")
        return None


def _datatype(value: Any) -> str:
    """Triton's ``TYPE_FP32`` as OIP's ``FP32`` (``TYPE_STRING``: ``BYTES``)."""
    text = str(value).removeprefix("TYPE_")
    return "BYTES" if text == "STRING" else text
