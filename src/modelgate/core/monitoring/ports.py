"""The ports of monitoring, as Protocols: where predictions and their feedback live, and the
anomaly metrics sink. Adapters implement them.

Contracts are stated on each port; the implementations live outside ``core/``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from modelgate.core.monitoring.predictions import (
    FeedbackRecord,
    LabelledPrediction,
    LabelQuery,
    PredictionRecord,
)

__all__ = [
    "AnomalyObserver",
    "FeedbackStore",
]


class AnomalyObserver(Protocol):
    """Told of each request the anomaly check marked (``action``: ``"flagged"``) or
    refused (``"rejected"``); on the request path, so it must not block or do I/O."""

    def anomalous(self, model: str, version: str, action: str) -> None: ...


class FeedbackStore(Protocol):
    """Where recorded predictions and their feedback (ground truth) live.

    Contract:

    - ``append`` writes every prediction in one transaction (all or none); text a column
      cannot hold is INVALID_ARGUMENT and nothing is written;
    - ``find`` answers the rows of the newest inference of ``tenant_id`` whose request id
      or OIP id is ``request_id``, ordered by row; [] when there is none (another tenant's
      predictions are never found);
    - ``label`` writes every feedback in one transaction; a later label of the same row
      replaces the earlier one (idempotent); feedback of a prediction that no longer
      exists is dropped;
    - ``labelled`` answers labelled predictions of a :class:`LabelQuery`;
    - ``subject_rows`` answers every prediction of these pseudonyms (of one tenant, or of
      all when ``tenant_id`` is None), labelled or not, oldest first;
    - ``delete_subject`` deletes those predictions and their feedback and answers how many
      predictions; ``purge`` deletes the predictions with ``expires_at <= now`` and their
      feedback; both are idempotent.
    """

    async def append(self, records: Sequence[PredictionRecord]) -> None: ...

    async def find(self, tenant_id: str, request_id: str) -> list[PredictionRecord]: ...

    async def label(self, feedback: Sequence[FeedbackRecord]) -> None: ...

    async def labelled(self, query: LabelQuery) -> list[LabelledPrediction]: ...

    async def subject_rows(
        self, subjects: Sequence[str], tenant_id: str | None
    ) -> list[LabelledPrediction]: ...

    async def delete_subject(self, subjects: Sequence[str], tenant_id: str | None) -> int: ...

    async def purge(self, now: datetime) -> int: ...
