"""The ports of monitoring, as Protocols: where predictions and their feedback live, the
anomaly metrics sink, and the metric sources of the built-in alerts (:class:`AlertSource`,
answering :class:`Reading`). Adapters implement them.

Contracts are stated on each port; the implementations live outside ``core/``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from modelgate.core.monitoring.predictions import (
    FeedbackRecord,
    LabelledPrediction,
    LabelQuery,
    PredictionRecord,
)

__all__ = [
    "AlertSource",
    "AnomalyObserver",
    "FairnessGaps",
    "FairnessMetrics",
    "FeedbackStore",
    "GroupFigures",
    "Reading",
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


@dataclass(frozen=True, slots=True)
class Reading:
    """A metric's value for one subject over a window, and how many samples (requests)
    stand behind it."""

    value: float
    count: int


class AlertSource(Protocol):
    """Where rules read their metrics.

    ``knows(metric)`` says whether this source computes ``metric``. ``advance(now)`` is
    called once per evaluation, before any ``read``, with the monotonic time: a source that
    computes windows from cumulative counters records them then. ``read(metric, window_s)``
    answers one :class:`Reading` per subject over the last ``window_s`` seconds (a subject
    without samples in the window is left out). Both run on the event loop: in-memory
    work only, no I/O.
    """

    def knows(self, metric: str) -> bool: ...

    def advance(self, now: float) -> None: ...

    def read(self, metric: str, window_s: float) -> Mapping[str, Reading]: ...


@dataclass(frozen=True, slots=True)
class GroupFigures:
    """One group of a protected attribute: its labelled rows (``count``) and, when there
    are enough of them (``sufficient``), its selection rate (share predicted 1), accuracy,
    true and false positive rates, and how many of its labels are 1 (``positives``: a true
    positive rate of a group without any is 0 by Fairlearn's convention)."""

    group: str
    count: int
    sufficient: bool
    positives: int | None = None
    selection_rate: float | None = None
    accuracy: float | None = None
    true_positive_rate: float | None = None
    false_positive_rate: float | None = None


@dataclass(frozen=True, slots=True)
class FairnessGaps:
    """The largest between-group differences (and the demographic parity ratio: the
    smallest selection rate over the largest)."""

    demographic_parity_difference: float
    demographic_parity_ratio: float
    equalized_odds_difference: float
    equal_opportunity_difference: float


class FairnessMetrics(Protocol):
    """Computes fairness figures of binary decisions (0/1) for rows given as parallel
    lists of labels, predictions and group names (same length, at least one row). Pure
    computation: no I/O; CPU-bound, so callers with many rows run it off the event loop."""

    def by_group(
        self, labels: Sequence[int], predicted: Sequence[int], groups: Sequence[str]
    ) -> list[GroupFigures]: ...

    def differences(
        self, labels: Sequence[int], predicted: Sequence[int], groups: Sequence[str]
    ) -> FairnessGaps: ...
