"""A trainer that is worse on purpose, for the learning loop's tests: it fits the demo's
pipeline on labels shuffled out of order, so its candidate guesses (AUC about 0.5)."""

from __future__ import annotations

from typing import Any

import numpy as np

from modelgate.learning.trainer_api import TrainingJob
from modelgate.learning.trainers import credit_risk


def shuffled_labels(job: TrainingJob) -> dict[str, Any]:
    rng = np.random.default_rng(job.seed)
    noisy = TrainingJob(**{**job.__dict__, "labels": rng.permutation(job.labels)})
    answer = credit_risk.train(noisy)
    return {**answer, "algorithm": "logistic regression on shuffled labels"}
