"""Feedback: ground truth sent back for recorded predictions, and training datasets of
labelled ones.

A prediction (recorded by :class:`~modelgate.core.monitoring.feedback_recorder.FeedbackRecorder`)
is found by the tenant that made it and its request id: the transport id (REST
``X-Request-Id``, gRPC ``x-request-id`` metadata, the client's when it sent a sane one) or
the request's OIP ``id``. :class:`FeedbackService` attaches labels to it. Feedback may
arrive before its prediction is written (the answer leaves before the background write):
when the id is not in the store yet, the service writes what this replica holds, waiting
for a write in flight, and looks again; then, for a row another replica has not written
yet, it looks again for up to ``wait_s`` before answering NOT_FOUND.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from modelgate.core.access.authorization import require_scope
from modelgate.core.access.identity import Principal, Scope
from modelgate.core.monitoring.feedback_recorder import FeedbackRecorder
from modelgate.core.monitoring.ports import FeedbackStore
from modelgate.core.monitoring.predictions import (
    FeedbackRecord,
    LabelledPrediction,
    LabelQuery,
    PredictionRecord,
)
from modelgate.core.serving.requests import ANONYMOUS
from modelgate.errors import ErrorKind, ModelgateError, invalid

__all__ = ["MAX_LABEL", "FeedbackItem", "FeedbackService"]

#: the largest class index a label may name
MAX_LABEL = 2**31 - 1


@dataclass(frozen=True, slots=True)
class FeedbackItem:
    """Ground truth for one earlier request: ``labels`` one per row of the request, or
    ``label`` for row ``row``."""

    request_id: str
    label: int | None = None
    labels: tuple[int, ...] | None = None
    row: int = 0


class FeedbackService:
    """Ground truth for earlier predictions, and training datasets of labelled ones.

    Who may do what: a caller with the ``infer`` scope labels its own tenant's predictions
    (another tenant's request id answers NOT_FOUND, as an unknown one does); with access
    control off, the anonymous tenant's. Datasets: operators (``tenants:admin``)."""

    def __init__(
        self,
        store: FeedbackStore,
        recorder: FeedbackRecorder | None = None,
        *,
        wait_s: float = 2.0,
        max_waiting: int = 64,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """``wait_s``: how long a request id not found yet is looked for again (a
        prediction another replica has not written yet) before NOT_FOUND; ``max_waiting``:
        how many submissions of this process may be looking again at once (past it, a
        missing id is NOT_FOUND once what this replica holds is written), so that unknown
        ids cannot turn into an unbounded number of store queries."""
        self.store = store
        self.recorder = recorder
        self.wait_s = wait_s
        self.max_waiting = max_waiting
        self._waiting = 0
        self._now = now
        self._monotonic = monotonic
        self._sleep = sleep

    def now(self) -> datetime:
        return self._now()

    async def submit(self, principal: Principal | None, items: Sequence[FeedbackItem]) -> int:
        """Label the predictions ``items`` name, all or none; answers how many rows were
        labelled. NOT_FOUND names the first request id with no live prediction of the
        caller's tenant (after looking for it for up to ``wait_s``); INVALID_ARGUMENT a
        label that does not fit its prediction."""
        if principal is not None:
            require_scope(principal, Scope.INFER)
        tenant = ANONYMOUS if principal is None else principal.tenant_id
        now = self._now()
        deadline = self._monotonic() + self.wait_s  # one wait for the whole batch
        feedback: list[FeedbackRecord] = []
        for item in items:
            rows = await self._find(tenant, item.request_id, deadline)
            if not rows or rows[0].expires_at <= now:
                raise ModelgateError(
                    ErrorKind.NOT_FOUND,
                    f"no prediction with request id '{item.request_id}'",
                    details={"resource": "prediction"},
                )
            feedback.extend(_labels(item, rows, now))
        await self.store.label(feedback)
        return len(feedback)

    async def _find(self, tenant: str, request_id: str, deadline: float) -> list[PredictionRecord]:
        """The prediction's rows; when it is not written yet, what this replica holds is
        written (waiting for a write in flight: its lock), then the store is asked again
        every so often until ``deadline`` (another replica writes within its interval)."""
        rows = await self.store.find(tenant, request_id)
        if rows:
            return rows
        if self.recorder is not None:
            await self.recorder.flush()
            rows = await self.store.find(tenant, request_id)
        if rows or self._waiting >= self.max_waiting:
            return rows
        self._waiting += 1
        try:
            pause = 0.05
            while not rows:
                left = deadline - self._monotonic()
                if left <= 0:
                    break
                await self._sleep(min(pause, left))
                pause = min(pause * 2, 0.5)
                if self.recorder is not None:
                    await self.recorder.flush()
                rows = await self.store.find(tenant, request_id)
        finally:
            self._waiting -= 1
        return rows

    def labelled(
        self,
        principal: Principal,
        *,
        model: str,
        version: str | None = None,
        tenant_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> AsyncIterator[list[LabelledPrediction]]:
        """Every live labelled prediction of ``model``, oldest first, page by page."""
        require_scope(principal, Scope.TENANTS_ADMIN)
        query = LabelQuery(
            model=model,
            version=version,
            tenant_id=tenant_id,
            since=since,
            until=until,
            live_at=self._now(),
        )
        return self._pages(query)

    async def _pages(self, query: LabelQuery) -> AsyncIterator[list[LabelledPrediction]]:
        while True:
            page = await self.store.labelled(query)
            if page:
                yield page
            if len(page) < query.limit:
                return
            last = page[-1].prediction
            query = replace(query, after=(last.created_at, last.id, last.row))


def _labels(
    item: FeedbackItem, rows: list[PredictionRecord], now: datetime
) -> list[FeedbackRecord]:
    if item.labels is not None:
        if len(item.labels) != len(rows):
            raise invalid(
                f"request '{item.request_id}' had {len(rows)} rows recorded; 'labels' has "
                f"{len(item.labels)}"
            )
        return [
            FeedbackRecord(r.id, r.row, label, now)
            for r, label in zip(rows, item.labels, strict=True)
        ]
    if item.label is None:
        raise invalid("each item needs 'label' or 'labels'")
    if item.row >= len(rows):
        raise invalid(
            f"request '{item.request_id}' had {len(rows)} rows recorded; no row {item.row}"
        )
    row = rows[item.row]
    return [FeedbackRecord(row.id, row.row, item.label, now)]
