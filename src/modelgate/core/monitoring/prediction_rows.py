"""What a model predicted for each row of a request, read from the outputs the request
received: the rows :class:`~modelgate.core.monitoring.feedback_recorder.FeedbackRecorder`
records (which outputs are read: :class:`~modelgate.core.serving.manifest.FeedbackSpec`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from modelgate.core.serving.manifest import FeedbackSpec, ModelManifest
from modelgate.core.serving.tensors import Tensor

__all__ = ["prediction_rows"]

_INTEGER = frozenset({"BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32"})
_FLOAT = frozenset({"FP16", "FP32", "FP64", "BF16"})


def prediction_rows(
    manifest: ModelManifest, outputs: Sequence[Tensor]
) -> tuple[list[int | None], list[float | None]] | None:
    """The predicted class and score of each row, from the outputs the request received;
    None when they hold neither (see :class:`~modelgate.core.serving.manifest.FeedbackSpec`)."""
    spec = manifest.feedback or FeedbackSpec()
    by_name = {t.name: t for t in outputs}
    label = _output(by_name, spec.label_output, _INTEGER, outputs, ndim=1)
    score = _output(by_name, spec.score_output, _FLOAT, outputs, ndim=None)
    predicted: list[Any] | None = None  # int or None per row
    scores: list[Any] | None = None  # float or None per row
    if score is not None:
        values = np.asarray(score.data, dtype=np.float64)
        if values.ndim == 2 and values.shape[1] >= 2:
            classes = values.shape[1]
            scores = (values[:, 1] if classes == 2 else values.max(axis=1)).tolist()
            predicted = values.argmax(axis=1).tolist()
        elif values.ndim in (1, 2):
            flat = values.reshape(len(values))
            scores = flat.tolist()
            predicted = (flat >= 0.5).astype(np.int64).tolist()
    if label is not None:
        predicted = np.asarray(label.data).astype(np.int64).tolist()
    if predicted is None:
        return None
    if scores is None or len(scores) != len(predicted):
        scores = [None] * len(predicted)
    return predicted, scores


def _output(
    by_name: dict[str, Tensor],
    named: str | None,
    datatypes: frozenset[str],
    outputs: Sequence[Tensor],
    ndim: int | None,
) -> Tensor | None:
    if named is not None:
        found = by_name.get(named)
        return found if found is not None and found.datatype in datatypes else None
    for tensor in outputs:
        if tensor.datatype in datatypes and (ndim is None or tensor.data.ndim == ndim):
            return tensor
    return None
