"""A passing candidate installed as the model's next version, all at once
(``repository/versions.py``, as ``modelgate optimize --register`` does), with its lineage
record (origin ``learning-loop``) and a reference profile of its own training data; and a
failing one kept aside with its report.

Set aside: ``<model>/.learning/<run id>/`` (a hidden folder the repository never serves)
holds each run's ``run.json`` (status, progress and report) and, for a rejected candidate,
its artifact.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from modelgate import __version__
from modelgate.core.serving.ports import VersionSource
from modelgate.core.serving.profiles import profile_of
from modelgate.learning.evaluation import finite
from modelgate.repository.filesystem import VERSION_MANIFEST
from modelgate.repository.lineage import LINEAGE_FILE, lineage_record, write_lineage
from modelgate.repository.versions import install_version
from modelgate.runtimes.catalog import loaders

__all__ = ["RUNS_FOLDER", "STAGING_PREFIX", "install_candidate", "write_json_atomically"]

RUNS_FOLDER = ".learning"
STAGING_PREFIX = ".staging-learning-"
REFERENCE_FILE = "reference.json"
#: rows of the training data the new version's reference profile is made of
_PROFILE_ROWS = 5000


def install_candidate(
    model_dir: Path,
    serving: VersionSource,
    artifact: Path,
    *,
    card: Mapping[str, Any],
    lineage: Mapping[str, Any],
    profile_inputs: dict[str, np.ndarray[Any, Any]],
) -> int:
    """The new version's number. The staged version must load with the server's runtime
    and answer every output for ``profile_inputs``, else nothing is installed. Only an
    ONNX candidate is loaded: a pickle or a Python module would run the trainer's code in
    the server."""
    if serving.manifest.runtime != "onnxruntime":
        raise ValueError(
            f"a {serving.manifest.runtime} candidate is not loaded in the server: the learning "
            "loop only installs onnxruntime candidates"
        )

    def assemble(staging: Path) -> None:
        original = Path(serving.path)
        skip = {VERSION_MANIFEST, LINEAGE_FILE, REFERENCE_FILE, serving.manifest.artifact}
        for entry in original.iterdir():
            if entry.name in skip:
                continue
            if entry.is_dir():
                shutil.copytree(entry, staging / entry.name)
            else:
                shutil.copy2(entry, staging / entry.name)
        target = staging / serving.manifest.artifact
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(artifact, target)
        header = "# Written by the learning loop (docs/learning.md); see lineage.json.\n"
        (staging / VERSION_MANIFEST).write_text(
            header + yaml.safe_dump({"card": dict(card)}, sort_keys=False), encoding="utf-8"
        )
        record = lineage_record(
            origin="learning-loop",
            artifact=target,
            builder={"name": "modelgate learning loop", "version": __version__},
            **lineage,
        )
        write_lineage(staging, record)

    def check_and_profile(staged: VersionSource) -> None:
        """Loads and answers through the server's runtime; its reference profile is its
        own answers on the training inputs (drift and anomaly checks read it)."""
        rows = {name: array[:_PROFILE_ROWS] for name, array in profile_inputs.items()}
        predictor = loaders()[staged.manifest.runtime](staged)
        try:
            outputs = predictor.predict(rows)
        finally:
            predictor.close()
        count = len(next(iter(rows.values())))
        missing = [o.name for o in staged.manifest.outputs if len(outputs.get(o.name, ())) != count]
        if missing:
            raise ValueError(f"the candidate does not answer {', '.join(missing)}")
        categorical = _categorical(Path(serving.path) / REFERENCE_FILE)
        profile = profile_of(
            staged.manifest,
            rows,
            {k: np.asarray(v) for k, v in outputs.items()},
            categorical=categorical,
            validation_metrics=card.get("validation_metrics"),
            source="learning loop: training split",
        )
        write_json_atomically(Path(staged.path) / REFERENCE_FILE, profile)

    return install_version(model_dir, assemble, check_and_profile, staging_prefix=STAGING_PREFIX)


def _categorical(reference: Path) -> set[str]:
    """The features the serving version's profile treats as categories."""
    try:
        features = json.loads(reference.read_text(encoding="utf-8")).get("features", {})
    except (OSError, ValueError):
        return set()
    return {n for n, f in features.items() if isinstance(f, dict) and "categories" in f}


def write_json_atomically(path: Path, document: Mapping[str, Any]) -> None:
    text = json.dumps(finite(dict(document)), indent=1, default=str, allow_nan=False) + "\n"
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
