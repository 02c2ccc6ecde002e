"""What a trainer gets and must do: the learning loop's interface to user code.

A trainer is a function named in the manifest (``learning.trainer:
"package.module:function"``), called in its own process with a time limit::

    def train(job: TrainingJob) -> dict | None:
        ...fit on job.inputs / job.labels...
        job.output.write_bytes(onnx_bytes)     # the candidate artifact
        return {"algorithm": "...", "parameters": {...}}   # recorded in the lineage

The data it gets is sanitized (:mod:`modelgate.learning.sanitization`): no request ids,
tenants or subject pseudonyms, and without the columns the manifest marks ``sensitive`` or
``identifier``. The artifact it writes must still take the model's whole signature
(``signature``, every column, the removed ones included, which it must ignore), because the
candidate is served and evaluated with the inputs requests carry. The process has no
modelgate secrets in its environment; its stdout and stderr are kept in the run's folder.

This module imports numpy only, so a trainer can import it in any environment.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DATA_FILES", "JOB_FILE", "TrainingJob", "load_job"]

JOB_FILE = "job.json"
#: the numeric inputs and the labels (``np.savez``, read without pickle)
DATA_FILE = "train.npz"
#: the text inputs, one JSON object per row (no fixed-width padding, no pickle)
TEXT_FILE = "train-text.jsonl"
#: every file holding training rows: deleted when the run's training ends, however it ends
DATA_FILES = (DATA_FILE, TEXT_FILE)


@dataclass(frozen=True)
class TrainingJob:
    """One training run's data and settings."""

    model: str
    #: input name -> the training rows, [rows, kept columns] (FP32 etc. as the input's
    #: datatype); an input the manifest marks as a whole is absent
    inputs: dict[str, np.ndarray[Any, Any]]
    #: the ground-truth class index of each row
    labels: np.ndarray[Any, Any]
    #: input name -> the names of the kept columns, in order (inputs with feature names)
    feature_names: dict[str, list[str]]
    #: input name -> the columns removed before the trainer (``[]``: none); the artifact
    #: must take them and ignore them
    removed: dict[str, list[str]]
    #: the manifest's ``inputs`` and ``outputs`` (name, datatype, shape, feature_names,
    #: labels), which the artifact must serve
    signature: dict[str, Any]
    #: the manifest's ``learning.options``
    options: dict[str, Any]
    #: where to write the candidate artifact
    output: Path
    seed: int = 0
    #: the columns each row had before removal, for trainers that rebuild a full matrix
    full_width: dict[str, int] = field(default_factory=dict)


def _objects(values: list[Any]) -> np.ndarray[Any, Any]:
    """Texts as an object array: [rows] or, for a [rows, columns] input, [rows, columns]."""
    if values and isinstance(values[0], list):
        return np.array(values, dtype=object).reshape(len(values), -1)
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def load_job(folder: Path) -> TrainingJob:
    """The job the learning loop wrote into ``folder`` (its ``job.json`` and data)."""
    spec = json.loads((folder / JOB_FILE).read_text(encoding="utf-8"))
    texts = set(spec.get("text_inputs", ()))
    with np.load(folder / DATA_FILE, allow_pickle=False) as data:
        inputs = {name: data[f"input:{name}"] for name in spec["inputs"] if name not in texts}
        labels = data["labels"]
    if texts:
        rows: dict[str, list[Any]] = {name: [] for name in texts}
        with open(folder / TEXT_FILE, encoding="utf-8") as lines:
            for line in lines:
                row = json.loads(line)
                for name in texts:
                    rows[name].append(row[name])
        for name, values in rows.items():
            inputs[name] = _objects(values)
    return TrainingJob(
        model=spec["model"],
        inputs=inputs,
        labels=labels,
        feature_names=spec["feature_names"],
        removed=spec["removed"],
        signature=spec["signature"],
        options=spec["options"],
        output=folder / spec["output"],
        seed=int(spec["seed"]),
        full_width={k: int(v) for k, v in spec["full_width"].items()},
    )
