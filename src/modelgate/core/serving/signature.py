"""A model's signature at work: requests checked against it, answers shaped by it.

- :func:`validate_inputs`: names, datatypes, shapes, the batch size, the size limits and
  NaN/Infinity of a request's inputs against the manifest, before anything runs;
- :func:`select_outputs`: the outputs a request asks for (all, when it names none);
- :func:`output_tensors`: the runtime's arrays as the response's tensors, with Triton's
  classification extension;
- the shapes of OIP model metadata and of Triton's model configuration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelgate.core.serving.manifest import ModelManifest, TensorSpec
from modelgate.core.serving.tensors import Parameters, Tensor
from modelgate.core.serving.validation_plan import ValidationPlan
from modelgate.errors import invalid

__all__ = [
    "RequestedOutput",
    "card_parameters",
    "config_tensor",
    "output_tensors",
    "select_outputs",
    "tensor_metadata",
    "validate_inputs",
]


@dataclass(slots=True)
class RequestedOutput:
    name: str
    parameters: Parameters = field(default_factory=dict)


def validate_inputs(
    manifest: ModelManifest, tensors: list[Tensor]
) -> tuple[dict[str, np.ndarray[Any, Any]], int]:
    """Check inputs against the signature and the manifest's ``limits`` (rows, texts and
    the bytes of each, see :mod:`modelgate.core.serving.request_size`); return them by name with
    the batch size. The request path uses the loaded version's prebuilt
    :class:`~modelgate.core.serving.validation_plan.ValidationPlan`; this builds one for a
    manifest that has none."""
    return ValidationPlan(manifest).validate(tensors)


def select_outputs(
    manifest: ModelManifest, requested: list[RequestedOutput] | None
) -> list[RequestedOutput] | None:
    if not requested:
        return None
    seen: set[str] = set()
    for output in requested:
        spec = manifest.output(output.name)
        if spec is None:
            raise invalid(f"unexpected output '{output.name}' for model '{manifest.name}'")
        if output.name in seen:
            raise invalid(f"output '{output.name}' is requested twice")
        seen.add(output.name)
        k = output.parameters.get("classification")
        if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
            raise invalid(f"classification count for '{output.name}' must be a positive integer")
    return requested


def output_tensors(
    manifest: ModelManifest,
    arrays: dict[str, np.ndarray[Any, Any]],
    requested: list[RequestedOutput] | None,
) -> list[Tensor]:
    if requested is None:
        return [Tensor(spec.name, spec.datatype, arrays[spec.name]) for spec in manifest.outputs]
    out: list[Tensor] = []
    for item in requested:
        spec = manifest.output(item.name)
        assert spec is not None
        data = arrays[spec.name]
        k = item.parameters.get("classification")
        if k is not None:
            out.append(Tensor(spec.name, "BYTES", _classify(data, int(k), spec.labels)))
        else:
            out.append(Tensor(spec.name, spec.datatype, data))
    return out


def _classify(
    scores: np.ndarray[Any, Any], k: int, labels: tuple[str, ...] | None
) -> np.ndarray[Any, Any]:
    """Triton's classification extension: top-k "score:index[:label]" strings per row."""
    batch = scores.reshape(scores.shape[0], -1) if scores.ndim > 1 else scores.reshape(1, -1)
    k = min(k, batch.shape[1])
    top = np.argsort(-batch, axis=1, kind="stable")[:, :k]
    out = np.empty(top.shape, dtype=object)
    for r, row in enumerate(top):
        for c, index in enumerate(row):
            text = f"{float(batch[r, index]):f}:{int(index)}"
            if labels and int(index) < len(labels):
                text += f":{labels[int(index)]}"
            out[r, c] = text.encode()
    return out if scores.ndim > 1 else out.reshape(-1)


def tensor_metadata(spec: TensorSpec) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)}
    params: dict[str, Any] = {}
    if spec.feature_names:
        params["feature_names"] = ",".join(spec.feature_names)
    if spec.labels:
        params["labels"] = ",".join(spec.labels)
    if params:
        meta["parameters"] = params
    return meta


def config_tensor(spec: TensorSpec, batched: bool) -> dict[str, Any]:
    dims = list(spec.shape[1:] if batched else spec.shape)
    return {
        "name": spec.name,
        "data_type": f"TYPE_{spec.datatype.replace('BYTES', 'STRING')}",
        "dims": dims,
    }


def card_parameters(manifest: ModelManifest) -> dict[str, Any]:
    """Card and labels as OIP parameters (values must be string, number or bool)."""
    params: dict[str, Any] = {}
    for key, value in {**manifest.card, **manifest.labels}.items():
        params[key] = value if isinstance(value, str | int | float | bool) else str(value)
    params["runtime"] = manifest.runtime
    return params
