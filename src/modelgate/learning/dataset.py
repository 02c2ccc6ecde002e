"""The learning loop's data set: the model's labelled predictions of a window joined with the
inputs the consented payload log kept for them (``core/monitoring/datasets.py``, the same
join ``modelgate feedback export`` runs, audited as ``feedback.export``).

What is never read: a tenant's payloads while it does not consent (its rows come without
inputs and are left out), rows past their retention, and anything of an erased subject
(erasure deletes both the prediction and the payload rows). Deduplication is by prediction
row (a later label replaces an earlier one in the store) and then by content: the same
inputs with the same label count once (a client's retries, a replayed batch).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from modelgate.core.access.identity import Principal
from modelgate.core.governance.privacy import PrivacyService
from modelgate.core.monitoring.datasets import export_training_rows
from modelgate.core.monitoring.feedback import FeedbackService

__all__ = ["LabelledRows", "read_labelled_rows"]


@dataclass(frozen=True)
class LabelledRows:
    """The exported rows (``core/monitoring/feedback_subjects.exported`` plus ``inputs``),
    the newest ``max_rows`` of the window, and how many the window held."""

    rows: list[dict[str, Any]]
    read: int


async def read_labelled_rows(
    feedback: FeedbackService,
    privacy: PrivacyService,
    principal: Principal,
    *,
    model: str,
    since: datetime,
    until: datetime,
    max_rows: int,
) -> LabelledRows:
    kept: deque[dict[str, Any]] = deque(maxlen=max_rows)  # oldest first: the newest stay
    read = await export_training_rows(
        feedback, privacy, principal, kept.append, model=model, since=since, until=until
    )
    return LabelledRows(list(kept), read)
