"""What a candidate method reads besides the original file (:class:`Material`), and how it
says the model has nothing it would change (:class:`NothingToDo`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from modelgate.core.serving.ports import Arrays

__all__ = ["DEFAULT_PRUNE_FRACTION", "CalibrationFeeds", "Material", "NothingToDo"]

#: the raw ONNX feeds static quantization calibrates with, one dict per run
CalibrationFeeds = Sequence[dict[str, Any]]
#: the share of each weight matrix magnitude pruning zeroes
DEFAULT_PRUNE_FRACTION = 0.3


class NothingToDo(Exception):  # noqa: N818  (a reason to skip, not a failure)
    """The method would leave the model as it is."""


@dataclass(frozen=True)
class Material:
    #: static quantization's calibration inputs
    calibration: CalibrationFeeds = ()
    #: reference inputs drawn apart from those candidates are measured on (distillation
    #: trains its student on them); None: the model has none (text models)
    training: Arrays | None = None
    #: magnitude pruning zeroes this share of each weight matrix
    prune_fraction: float = DEFAULT_PRUNE_FRACTION
