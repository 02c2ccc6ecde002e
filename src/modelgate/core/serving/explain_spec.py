"""The manifest's ``explain`` section: the model answers ``parameters.explain`` with
per-feature attributions (docs/explanations.md), and which of its outputs, and which column
of it, they explain. Parsed with the rest of the manifest; the explanations themselves are
:mod:`modelgate.core.pipeline.explanations`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from modelgate.core.serving.manifest import ModelManifest, TensorSpec

__all__ = ["ExplainSpec", "check_explain", "explained_column", "explained_output"]


class ExplainSpec(BaseModel):
    """The model answers requests that ask ``parameters.explain`` (docs/explanations.md):
    per-feature attributions of one output column, in ``link`` space, computed by
    ``method``. A model without this section refuses them (INVALID_ARGUMENT)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: ``linear``: exact attributions of a model linear in ``link`` space, w_i * (x_i - mean_i)
    #: against the reference means; ``kernel_shap``: SHAP's KernelExplainer, with a
    #: background drawn from the version's reference profile (any tabular model)
    method: Literal["linear", "kernel_shap"] = "kernel_shap"
    #: the output explained; unset: the first floating-point output
    output: str | None = None
    #: the column of that output explained, by its label or its index; unset: the last
    #: (a binary classifier's positive class). Ignored for a one-column ([-1]) output
    target: str | int | None = None
    #: the space the attributions add up in: ``logit`` for a probability (log-odds),
    #: ``identity`` for a score or a regression
    link: Literal["identity", "logit"] = "identity"


def check_explain(manifest: ModelManifest, spec: ExplainSpec) -> None:
    """A tabular model: one numeric input of [-1, features], and a floating-point output of
    [-1] or [-1, K] whose ``target`` column exists."""
    if len(manifest.inputs) != 1:
        raise ValueError("explain needs a model with exactly one input (a table of features)")
    tensor = manifest.inputs[0]
    if tensor.datatype in ("BYTES", "BOOL") or len(tensor.shape) != 2 or tensor.shape[1] < 1:
        raise ValueError(
            f"explain needs a numeric input of shape [-1, features], not '{tensor.name}' "
            f"({tensor.datatype} {list(tensor.shape)})"
        )
    output = explained_output(manifest, spec)
    if output is None:
        raise ValueError("explain needs a floating-point output ([-1] or [-1, K])")
    if len(output.shape) == 2 and spec.target is not None:
        explained_column(output, spec)  # raises when the target is not one of its columns


def explained_output(manifest: ModelManifest, spec: ExplainSpec) -> TensorSpec | None:
    """The output an ``explain`` section explains (None: the model has no fitting one)."""
    for tensor in manifest.outputs:
        if spec.output is not None and tensor.name != spec.output:
            continue
        fits = tensor.datatype in ("FP16", "FP32", "FP64") and (
            tensor.shape == (-1,) or (len(tensor.shape) == 2 and tensor.shape[1] >= 1)
        )
        if fits:
            return tensor
        if spec.output is not None:
            return None
    return None


def explained_column(output: TensorSpec, spec: ExplainSpec) -> int | None:
    """The column of ``output`` explained (None: a one-column [-1] output); ValueError when
    ``target`` names none of its columns."""
    if len(output.shape) == 1:
        return None
    columns = output.shape[1]
    target = spec.target
    if target is None:
        if columns == -1:
            raise ValueError(f"explain needs a target: output '{output.name}' has no fixed width")
        return columns - 1
    if isinstance(target, int) and not isinstance(target, bool):
        if target < 0 or (columns != -1 and target >= columns):
            raise ValueError(f"explain target {target} is not a column of '{output.name}'")
        return target
    labels = output.labels or ()
    if target not in labels:
        raise ValueError(f"explain target {target!r} is not one of the labels of '{output.name}'")
    return labels.index(str(target))
