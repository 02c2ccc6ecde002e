"""Feature attributions of a tabular model's output (docs/explanations.md).

An attribution says what each input feature added to one output column of one row, in a
stated space (``link``: ``identity``, or ``logit`` for a probability, i.e. log-odds),
relative to a base value, so that for every row::

    base_value + sum(attributions) == link(output)      within ADDITIVITY_TOLERANCE

Two methods, named by the manifest's ``explain`` section:

- ``linear`` (:func:`linear_attributions`): exact for a model linear in link space. Each
  feature is moved from the reference mean to the row's value alone, so feature i gets
  ``link(f(mean + e_i (x_i - mean_i))) - link(f(mean))``, which is ``w_i * (x_i - mean_i)``
  for a model ``link(f(x)) = b + w . x`` (a logistic regression: its log-odds), with
  ``link(f(mean))`` the base value. The model's coefficients are never read from its file:
  the probes find them through the runtime, and the same call checks that the parts add up
  to each row's output (a model whose features interact fails with FAILED_PRECONDITION
  instead of answering wrong numbers; one that is additive but not linear, a sum of one
  function per feature, passes, and its attributions are then its exact Shapley values
  against the means).
- ``kernel_shap``: SHAP's KernelExplainer, behind :class:`KernelAttributor` (the library is
  an adapter's, :mod:`modelgate.explaining.kernel_shap`), with a background drawn from the
  version's reference profile (:func:`reference_background`).

Either way the model is called through a :data:`ModelFunction`: all the rows a method needs
at once, run by the version's own predictor in blocks of at most ``block_elements`` input
elements (:func:`model_function`), never row by row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from modelgate.core.serving.execution import run_predict
from modelgate.core.serving.manifest import (
    ExplainSpec,
    ModelManifest,
    explained_column,
    explained_output,
)
from modelgate.core.serving.ports import ModelRuntime, Predictor
from modelgate.core.serving.tensors import numpy_dtype
from modelgate.errors import ErrorKind, ModelgateError

__all__ = [
    "ADDITIVITY_TOLERANCE",
    "Attribution",
    "KernelAttributor",
    "ModelFunction",
    "apply_link",
    "linear_attributions",
    "model_function",
    "predictor_of",
    "reference_background",
    "reference_means",
]

#: the most |base_value + sum(attributions) - link(output)| an answer may show, in link
#: space, for outputs away from 0 and 1 (a logit of a float32 probability p is only known
#: to about 1.2e-7 / min(p, 1 - p), which the linear method's check adds per row);
#: everything after the model is float64
ADDITIVITY_TOLERANCE = 1e-3
#: float32's rounding step near 1 (2 ** -24 is half its machine epsilon; twice that, to be safe)
_FLOAT32_STEP = 2.0**-23
#: probabilities are kept in [P, 1 - P] before a logit, so a model answering 0 or 1 exactly
#: gives finite log-odds (about +-16.1)
_P = 1e-7

Rows = NDArray[np.float64]
#: rows [n, features] -> the explained output column [n], in the model's own space (for a
#: ``logit`` link: probabilities, already kept inside [P, 1 - P])
ModelFunction = Callable[[Rows], NDArray[np.float64]]


@dataclass(frozen=True, slots=True)
class Attribution:
    """The attributions of some rows: ``values[r, i]`` is feature i's part of row r."""

    values: Rows
    base_value: float
    #: "linear" or "kernel_shap"
    method: str
    #: the space they add up in: "identity" or "logit"
    link: str
    #: the model's output per row, in that space (``base_value + values.sum(1)``, within
    #: the tolerance)
    outputs: NDArray[np.float64]
    #: model rows run to compute them: the explanation's cost
    evaluations: int
    #: KernelSHAP's coalition samples per row (None: the linear method, which samples none)
    samples: int | None = None


class KernelAttributor(Protocol):
    """A model-agnostic attribution method (KernelSHAP).

    ``attribute`` answers the attributions [n, features] of ``rows`` and the base value, in
    ``link`` space (the link applied to the mean of ``model`` over ``background``), adding up
    exactly (up to float64 rounding) to ``link(model(row))`` for each row, and the number of
    model rows it ran. It calls ``model`` with many rows at a time, never one by one, with
    at most ``samples`` coalitions per row. It blocks: run it in a worker thread."""

    def attribute(
        self, model: ModelFunction, rows: Rows, background: Rows, link: str, samples: int
    ) -> tuple[Rows, float, int]: ...


def apply_link(link: str, values: NDArray[np.float64]) -> NDArray[np.float64]:
    """``values`` in link space (a logit's input is first kept inside [P, 1 - P])."""
    if link == "logit":
        p = np.clip(values, _P, 1.0 - _P)
        return np.asarray(np.log(p / (1.0 - p)), dtype=np.float64)
    return np.asarray(values, dtype=np.float64)


def linear_attributions(model: ModelFunction, rows: Rows, means: Rows, link: str) -> Attribution:
    """Exact attributions of a model linear in ``link`` space, against the reference
    ``means``, with one model call of ``1 + n * (features + 1)`` rows: the means, each row's
    features moved one at a time, and the rows themselves (to check additivity).
    FAILED_PRECONDITION when the model is not linear there."""
    n, features = rows.shape
    probes = np.empty((1 + n * features + n, features), dtype=np.float64)
    probes[:] = means
    moved = probes[1 : 1 + n * features].reshape(n, features, features)
    diagonal = np.arange(features)
    moved[:, diagonal, diagonal] = rows  # row r, probe i: the means with feature i of row r
    probes[1 + n * features :] = rows
    answers = model(probes)
    out = apply_link(link, answers)
    base = float(out[0])
    values = out[1 : 1 + n * features].reshape(n, features) - base
    outputs = out[1 + n * features :]
    gaps = np.abs(base + values.sum(axis=1) - outputs)
    tolerance = np.full(n, ADDITIVITY_TOLERANCE)
    if link == "logit":  # a float32 probability near 0 or 1 carries little of its log-odds
        p = answers[1 + n * features :]
        tolerance += (features + 2) * _FLOAT32_STEP / np.minimum(p, 1.0 - p)
    gap = float(np.max(gaps - tolerance))
    if not gap <= 0.0:
        raise ModelgateError(
            ErrorKind.FAILED_PRECONDITION,
            f"the model is not linear in {link} space: its features interact (attributions "
            "miss its output by "
            f"{float(np.max(gaps)):.3g}): its manifest's explain.method should be kernel_shap",
        )
    return Attribution(values, base, "linear", link, outputs, len(probes))


def reference_means(profile: Mapping[str, Any] | None, names: Sequence[str]) -> Rows:
    """Each feature's mean in the version's reference profile (``reference.json``)."""
    return np.array([_statistics(profile, name)["mean"] for name in names], dtype=np.float64)


def reference_background(
    profile: Mapping[str, Any] | None, names: Sequence[str], rows: int, seed: int = 0
) -> Rows:
    """``rows`` background rows drawn from the reference profile's per-feature
    distributions: a Latin hypercube over each feature's quantiles (numeric features,
    interpolated between the recorded levels) or category frequencies (categorical ones),
    so every stratum of each feature is represented. The features are drawn independently
    (the profile holds marginals, not the joint distribution): KernelSHAP then explains
    the model against the features' marginal distributions (interventional SHAP values).
    Deterministic for a given seed, so the same request gets the same explanation."""
    generator = np.random.default_rng(seed)
    background = np.empty((rows, len(names)), dtype=np.float64)
    for j, name in enumerate(names):
        stats = _statistics(profile, name)
        levels = (generator.permutation(rows) + 0.5) / rows
        categories = stats.get("categories")
        if isinstance(categories, dict):
            values = np.asarray(categories["values"], dtype=np.float64)
            cumulative = np.cumsum(np.asarray(categories["frequencies"], dtype=np.float64))
            picked = np.searchsorted(cumulative / cumulative[-1], levels, side="right")
            background[:, j] = values[np.minimum(picked, len(values) - 1)]
        else:
            quantiles = stats["quantiles"]
            background[:, j] = np.interp(levels, quantiles["levels"], quantiles["values"])
    return background


def _statistics(profile: Mapping[str, Any] | None, name: str) -> Mapping[str, Any]:
    features = profile.get("features") if profile is not None else None
    stats = features.get(name) if isinstance(features, dict) else None
    if not isinstance(stats, dict) or "mean" not in stats or "quantiles" not in stats:
        raise ModelgateError(
            ErrorKind.FAILED_PRECONDITION,
            f"explanations need the version's reference profile (reference.json) with "
            f"statistics of feature '{name}'",
        )
    return stats


def predictor_of(runtime: ModelRuntime) -> Predictor | None:
    """The synchronous predictor under a version's runtime (its batcher's), which the
    explanations call with many rows at once; None when there is none here (a gateway's
    version runs on a node)."""
    seen: Any = runtime
    for _ in range(4):  # a batcher over a predictor runtime at most, today
        predictor = getattr(seen, "predictor", None)
        if predictor is not None:
            return predictor  # type: ignore[no-any-return]
        seen = getattr(seen, "inner", None)
        if seen is None:
            return None
    return None


def model_function(
    predictor: Predictor, manifest: ModelManifest, spec: ExplainSpec, block_elements: int
) -> ModelFunction:
    """The explained output column of ``manifest``'s model as a function of its feature
    rows, run by ``predictor`` in blocks of at most ``block_elements`` input elements."""
    tensor = manifest.inputs[0]
    dtype = numpy_dtype(tensor.datatype)
    output = explained_output(manifest, spec)
    assert output is not None  # the manifest was checked when it was parsed
    column = explained_column(output, spec)
    logit = spec.link == "logit"
    block = max(1, block_elements // max(1, tensor.shape[1]))

    def run(rows: Rows) -> NDArray[np.float64]:
        answer = np.empty(len(rows), dtype=np.float64)
        for start in range(0, len(rows), block):
            chunk = np.ascontiguousarray(rows[start : start + block], dtype=dtype)
            result = run_predict(predictor, {tensor.name: chunk})[output.name]
            answer[start : start + len(chunk)] = (
                result.reshape(-1) if column is None else result[:, column]
            )
        return np.clip(answer, _P, 1.0 - _P) if logit else answer

    return run
