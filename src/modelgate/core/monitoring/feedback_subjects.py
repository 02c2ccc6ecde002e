"""A data subject's recorded predictions and their feedback, erased and exported with the
payload logs (docs/privacy.md)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from modelgate.core.monitoring.feedback_recorder import FeedbackRecorder
from modelgate.core.monitoring.ports import FeedbackStore
from modelgate.core.monitoring.predictions import LabelledPrediction

__all__ = ["FeedbackSubjects", "exported"]


class FeedbackSubjects:
    """A data subject's predictions and their feedback, erased and exported with the
    payload logs (a :class:`~modelgate.core.governance.ports.SubjectData`)."""

    name = "predictions"

    def __init__(self, store: FeedbackStore, recorder: FeedbackRecorder | None = None) -> None:
        self.store = store
        self.recorder = recorder

    async def erase(self, subjects: Sequence[str], tenant_id: str | None) -> int:
        if self.recorder is not None:
            await self.recorder.flush()
        return await self.store.delete_subject(subjects, tenant_id)

    async def export(self, subjects: Sequence[str], tenant_id: str | None) -> list[Any]:
        if self.recorder is not None:
            await self.recorder.flush()
        return [exported(found) for found in await self.store.subject_rows(subjects, tenant_id)]


def exported(found: LabelledPrediction) -> dict[str, Any]:
    """A prediction and its label as exports show them."""
    p = found.prediction
    return {
        "prediction_id": p.id,
        "row": p.row,
        "tenant_id": p.tenant_id,
        "request_id": p.request_id,
        "inference_id": p.inference_id,
        "model": p.model,
        "version": p.version,
        "subject": p.subject,
        "created_at": p.created_at.isoformat(),
        "expires_at": p.expires_at.isoformat(),
        "predicted": p.predicted,
        "score": p.score,
        "label": found.label,
        "labelled_at": None if found.labelled_at is None else found.labelled_at.isoformat(),
    }
