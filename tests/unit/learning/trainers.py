"""Trainers for the training tests: each misbehaves in one way, or reports what it saw."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from modelgate.learning.trainer_api import TrainingJob


def sleeps(job: TrainingJob) -> None:
    time.sleep(60)


def raises(job: TrainingJob) -> None:
    raise ValueError("no good")


def writes_nothing(job: TrainingJob) -> dict[str, Any]:
    return {"algorithm": "none"}


def reports(job: TrainingJob) -> dict[str, Any]:
    job.output.write_bytes(b"artifact")
    return {
        "environment": sorted(k for k in os.environ if k.startswith("MODELGATE_") or "SECRET" in k),
        "columns": job.feature_names,
        "removed": job.removed,
        "shape": list(job.inputs["x"].shape),
        "labels": job.labels.tolist(),
        "options": json.dumps(job.options),
    }
