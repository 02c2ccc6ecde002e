"""A :class:`~modelgate.core.monitoring.ports.FeedbackStore` in dictionaries (tests; nothing
persists)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from modelgate.core.monitoring.predictions import (
    FeedbackRecord,
    LabelledPrediction,
    LabelQuery,
    PredictionRecord,
)

__all__ = ["MemoryFeedbackStore"]


class MemoryFeedbackStore:
    def __init__(self) -> None:
        self._predictions: dict[tuple[str, int], PredictionRecord] = {}
        self._feedback: dict[tuple[str, int], FeedbackRecord] = {}

    async def append(self, records: Sequence[PredictionRecord]) -> None:
        keys = [(r.id, r.row) for r in records]
        if len(set(keys)) != len(keys) or any(k in self._predictions for k in keys):
            raise ValueError("duplicate prediction")  # as a primary key refuses it
        for key, record in zip(keys, records, strict=True):
            self._predictions[key] = record

    async def find(self, tenant_id: str, request_id: str) -> list[PredictionRecord]:
        matching = [
            p
            for p in self._predictions.values()
            if p.tenant_id == tenant_id and request_id in (p.request_id, p.inference_id)
        ]
        if not matching:
            return []
        newest = max(matching, key=lambda p: (p.created_at, p.id)).id
        return sorted((p for p in matching if p.id == newest), key=lambda p: p.row)

    async def label(self, feedback: Sequence[FeedbackRecord]) -> None:
        for f in feedback:
            if (f.prediction_id, f.row) in self._predictions:
                self._feedback[(f.prediction_id, f.row)] = f

    async def labelled(self, query: LabelQuery) -> list[LabelledPrediction]:
        found = [
            LabelledPrediction(p, f.label, f.created_at)
            for key, p in self._predictions.items()
            if (f := self._feedback.get(key)) is not None and _matches(p, query)
        ]
        found.sort(key=_order, reverse=query.newest_first)
        return found[: query.limit]

    async def subject_rows(
        self, subjects: Sequence[str], tenant_id: str | None
    ) -> list[LabelledPrediction]:
        found = []
        for key, p in self._predictions.items():
            if _of_subject(p, subjects, tenant_id):
                f = self._feedback.get(key)
                found.append(
                    LabelledPrediction(
                        p, None if f is None else f.label, None if f is None else f.created_at
                    )
                )
        return sorted(found, key=_order)

    async def delete_subject(self, subjects: Sequence[str], tenant_id: str | None) -> int:
        return self._delete(lambda p: _of_subject(p, subjects, tenant_id))

    async def purge(self, now: datetime) -> int:
        return self._delete(lambda p: p.expires_at <= now)

    def _delete(self, doomed: Callable[[PredictionRecord], bool]) -> int:
        keys = [key for key, p in self._predictions.items() if doomed(p)]
        for key in keys:
            del self._predictions[key]
            self._feedback.pop(key, None)
        return len(keys)


def _order(found: LabelledPrediction) -> tuple[datetime, str, int]:
    p = found.prediction
    return (p.created_at, p.id, p.row)


def _of_subject(p: PredictionRecord, subjects: Sequence[str], tenant_id: str | None) -> bool:
    return p.subject in subjects and (tenant_id is None or p.tenant_id == tenant_id)


def _matches(p: PredictionRecord, q: LabelQuery) -> bool:
    return (
        (q.model is None or p.model == q.model)
        and (q.version is None or p.version == q.version)
        and (q.tenant_id is None or p.tenant_id == q.tenant_id)
        and (q.since is None or p.created_at >= q.since)
        and (q.until is None or p.created_at < q.until)
        and (q.live_at is None or p.expires_at > q.live_at)
        and (q.after is None or (p.created_at, p.id, p.row) > q.after)
    )
