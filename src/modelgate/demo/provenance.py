"""The demo build's lineage records (``lineage.json``, modelgate/repository/lineage.py).

Written after each model's files, in its staging folder, so a swapped-in model always has
them. credit-risk records its synthetic data set (regenerated from the same seed: the same
arrays the build trained on, hashed), the algorithm and its validation metrics; MiniLM records
the weights package it exported and its agreement with sentence-transformers, and version 2
names version 1 as the parent it was quantized from.

Only numpy and the standard library at module level, like credit_risk.py: the serving
environment's tests call these on a copy of the built repository.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from modelgate import __version__
from modelgate.demo import credit_risk
from modelgate.demo.recipe import BUILD_DEPENDENCIES
from modelgate.repository.lineage import lineage_record, write_lineage

__all__ = ["builder", "dataset_digest", "write_credit_risk_lineage", "write_minilm_lineage"]

BUILDER_NAME = "modelgate demo build (python -m modelgate.demo build)"


def builder(recipe: str | None) -> dict[str, Any]:
    """The builder: modelgate's version, the recipe fingerprint and the pinned libraries."""
    return {
        "name": BUILDER_NAME,
        "version": __version__,
        "recipe": recipe,
        "dependencies": {name: _version(name) for name in BUILD_DEPENDENCIES},
    }


def dataset_digest(dataset: credit_risk.Dataset) -> dict[str, Any]:
    """Rows, size and SHA-256 of a data set's arrays (dtype, shape and bytes of each)."""
    digest = hashlib.sha256()
    size = 0
    for array in (dataset.features, dataset.labels):
        contiguous = np.ascontiguousarray(array)
        digest.update(f"{contiguous.dtype.str}{contiguous.shape}".encode())
        digest.update(contiguous.tobytes())
        size += contiguous.nbytes
    return {"rows": len(dataset), "bytes": size, "sha256": digest.hexdigest()}


def write_credit_risk_lineage(
    model_dir: Path,
    versions: Sequence[credit_risk.TrainedVersion],
    recipe: str | None,
    seed: int = credit_risk.SEED,
) -> None:
    """A lineage record in each built credit-risk version folder of ``model_dir``."""
    full = credit_risk.generate(credit_risk.N_ROWS, seed)
    train, validation = credit_risk.split(full, credit_risk.VALIDATION_FRACTION, seed)
    dataset = {
        "name": "synthetic loan applicants",
        "generator": "modelgate.demo.credit_risk.generate",
        "seed": seed,
        "columns": [*credit_risk.FEATURE_NAMES, "default"],
        "protected_attributes": list(credit_risk.PROTECTED_ATTRIBUTES),
        **dataset_digest(full),
        "train": dataset_digest(train),
        "validation": dataset_digest(validation),
    }
    for trained in versions:
        folder = model_dir / str(trained.version)
        record = lineage_record(
            origin="demo-build",
            artifact=folder / "model.onnx",
            builder=builder(recipe),
            dataset=dataset,
            training={"algorithm": trained.algorithm, "seed": seed, "library": "scikit-learn"},
            evaluation={
                "split": "validation",
                "rows": len(validation),
                "metrics": {k: round(v, 6) for k, v in trained.metrics.items()},
            },
        )
        write_lineage(folder, record)


def write_minilm_lineage(
    model_dir: Path, checks: Sequence[Any], recipe: str | None, weights_package: str
) -> None:
    """A lineage record in each MiniLM version folder; ``checks`` are minilm.VersionCheck."""
    for check in checks:
        folder = model_dir / str(check.version)
        parent = None
        if check.version != 1:  # the INT8 version is version 1 quantized
            parent = {"version": 1, "relation": "int8 dynamic quantization"}
        record = lineage_record(
            origin="demo-build",
            artifact=folder / "model.onnx",
            builder=builder(recipe),
            parent=parent,
            # pretrained weights: the data they were trained on is not in this build
            dataset=None,
            training={
                "source": f"{weights_package} {_version(weights_package)}",
                "export": "torch.onnx (FP32)" if check.version == 1 else "from version 1",
            },
            evaluation={
                "split": "reference sentences",
                "metrics": {
                    "min_cosine_to_sentence_transformers": round(check.min_cosine, 6),
                    "mean_cosine_to_sentence_transformers": round(check.mean_cosine, 6),
                },
            },
        )
        write_lineage(folder, record)


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"
