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
from modelgate.core.serving.request_size import check_rows, check_texts
from modelgate.core.serving.tensors import Parameters, Tensor
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
    the batch size."""
    inputs: dict[str, np.ndarray[Any, Any]] = {}
    rows = -1
    texts = 0
    max_rows = manifest.limits.max_rows or 0
    for tensor in tensors:
        spec = manifest.input(tensor.name)
        if spec is None:
            expected = ", ".join(s.name for s in manifest.inputs)
            raise invalid(
                f"unexpected input '{tensor.name}' for model '{manifest.name}' "
                f"(it takes: {expected})"
            )
        if tensor.name in inputs:
            raise invalid(f"input '{tensor.name}' is given twice")
        if tensor.datatype != spec.datatype:
            raise invalid(
                f"input '{tensor.name}' has datatype {tensor.datatype}, "
                f"model '{manifest.name}' expects {spec.datatype}"
            )
        shape = tensor.data.shape
        if len(shape) != len(spec.shape) or any(
            want != -1 and got != want for got, want in zip(shape, spec.shape, strict=True)
        ):
            raise invalid(
                f"input '{tensor.name}' has shape {list(shape)}, model "
                f"'{manifest.name}' expects {list(spec.shape)}"
            )
        if shape:
            if rows not in (-1, shape[0]):
                raise invalid("inputs disagree on the batch size (first dimension)")
            rows = shape[0]
            if rows > max_rows:  # before any pass over the data
                check_rows(manifest, rows)
        if tensor.datatype == "BYTES":
            texts = check_texts(manifest, tensor.name, tensor.data, texts)
        if (
            not spec.allow_nonfinite
            and tensor.data.dtype.kind == "f"
            and not bool(np.isfinite(tensor.data).all())
        ):
            raise invalid(
                f"input '{tensor.name}' holds NaN or Infinity, which model "
                f"'{manifest.name}' does not accept"
            )
        inputs[tensor.name] = tensor.data
    if len(inputs) != len(manifest.inputs):
        missing = [s.name for s in manifest.inputs if s.name not in inputs]
        raise invalid(f"missing input(s) {', '.join(missing)} for model '{manifest.name}'")
    if rows == 0:
        raise invalid("the batch is empty (first dimension is 0)")
    return inputs, max(rows, 1)


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
