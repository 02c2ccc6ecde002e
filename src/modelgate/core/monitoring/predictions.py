"""Recorded predictions and the ground truth sent back for them: the rows the
:class:`~modelgate.core.monitoring.ports.FeedbackStore` keeps.

A prediction is one row of one inference of a model whose manifest enables ``feedback``:
who asked (tenant), which request (its transport request id and, when the request carried
one, its OIP ``id``), which model and version, when, the data subject's pseudonym when the
request named a subject, the predicted class and the score. Feedback is a label for one
such row. Both are deleted when the prediction's retention ends, or when its subject is
erased.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["PAGE", "FeedbackRecord", "LabelQuery", "LabelledPrediction", "PredictionRecord"]

PAGE = 500


@dataclass(frozen=True, slots=True)
class PredictionRecord:
    """One row of one recorded inference. ``id`` names the inference (all its rows share
    it); ``subject`` is a pseudonym (HMAC-SHA256, hex), never the id itself; ``predicted``
    is the predicted class index and ``score`` the positive class's probability (binary
    models) or the top probability (None where the model's outputs hold none). ``groups``
    holds the row's value of each protected attribute the manifest names (attribute,
    value), for fairness audits; () when it names none."""

    id: str
    row: int
    tenant_id: str
    request_id: str
    inference_id: str | None
    model: str
    version: str
    subject: str | None
    created_at: datetime
    expires_at: datetime
    predicted: int | None
    score: float | None
    groups: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class FeedbackRecord:
    """The ground truth of one prediction row; a later one replaces it."""

    prediction_id: str
    row: int
    label: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class LabelledPrediction:
    """A prediction and its label (``label`` None: no feedback yet, in subject exports)."""

    prediction: PredictionRecord
    label: int | None
    labelled_at: datetime | None


@dataclass(frozen=True, slots=True)
class LabelQuery:
    """Labelled predictions matching every filter given, at most ``limit``.

    ``since`` (inclusive) and ``until`` (exclusive) bound the prediction's ``created_at``;
    ``live_at`` keeps predictions that expire after it. Ordered by ``(created_at, id,
    row)``, oldest first, after the ``after`` key (paging), or newest first with
    ``newest_first`` (a window of the last ``limit``)."""

    model: str | None = None
    version: str | None = None
    tenant_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    live_at: datetime | None = None
    after: tuple[datetime, str, int] | None = None
    newest_first: bool = False
    limit: int = PAGE
