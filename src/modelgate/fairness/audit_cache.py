"""``FairnessAuditCache``: fairness audits computed once per question and shared.

An audit reads up to ``fairness_max_rows`` labelled predictions and runs Fairlearn over them
in a thread: far too much to do again for every poll of a dashboard or every turn of a
client's loop. The cache answers a question (model, version, attribute, tenant whose
predictions are read, ``since``, ``until``) from:

- the report computed less than ``ttl_s`` seconds ago, if there is one;
- else the audit of the same question already running (single flight: 20 identical audits
  arriving together run one), awaited under a shield, so a caller that gives up does not
  cancel it for the others;
- else a new audit, before which ``before_computing`` runs (the admin API charges the
  caller's audit budget there: only a caller who starts a computation pays).

Authorization is asked on every call, cached answer or not: the caller must be allowed to
read the model, and a tenant's question is always about its own predictions (naming another
tenant is NOT_FOUND), as :class:`~modelgate.core.monitoring.fairness.FairnessAuditor` says.
A question without ``since`` means "the last ``fairness_window_seconds``": its report is
reused while fresh, so that window may end up to ``ttl_s`` before the answer. Failures are
shared with the callers waiting on them, never kept. At most ``max_entries`` reports are
kept (the oldest are dropped first); a report is a few kilobytes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

from modelgate.core.access.authorization import is_operator
from modelgate.core.access.identity import Principal, Scope
from modelgate.core.monitoring.fairness import FairnessAuditor, FairnessReport
from modelgate.errors import ErrorKind, ModelgateError

__all__ = ["FairnessAuditCache"]

_Question = tuple[str, str | None, str | None, str | None, datetime | None, datetime | None]


class FairnessAuditCache:
    """:meth:`FairnessAuditor.audit`, computed once per question per ``ttl_s`` seconds
    (0: only concurrent identical audits are shared)."""

    def __init__(
        self,
        auditor: FairnessAuditor,
        *,
        ttl_s: float = 30.0,
        max_entries: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.auditor = auditor
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        #: question -> (when it goes stale, on ``clock``; the report)
        self._reports: dict[_Question, tuple[float, FairnessReport]] = {}
        self._running: dict[_Question, asyncio.Task[FairnessReport]] = {}

    async def audit(
        self,
        principal: Principal | None,
        model: str,
        *,
        now: datetime,
        version: str | None = None,
        attribute: str | None = None,
        tenant_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        before_computing: Callable[[], Awaitable[None]] | None = None,
    ) -> FairnessReport:
        auditor = self.auditor
        await auditor.catalog.authorize(principal, model, version, Scope.MODELS_READ)
        if principal is not None and not is_operator(principal):
            if tenant_id is not None and tenant_id != principal.tenant_id:
                raise ModelgateError(ErrorKind.NOT_FOUND, f"unknown tenant '{tenant_id}'")
            tenant_id = principal.tenant_id
        question: _Question = (model, version, attribute, tenant_id, since, until)
        kept = self._fresh(question)
        if kept is not None:
            return kept
        task = self._running.get(question)
        if task is None and before_computing is not None:
            await before_computing()
            # another caller may have started or finished it meanwhile
            kept = self._fresh(question)
            if kept is not None:
                return kept
            task = self._running.get(question)
        if task is None:
            task = asyncio.get_running_loop().create_task(
                auditor.audit(
                    principal,
                    model,
                    now=now,
                    version=version,
                    attribute=attribute,
                    tenant_id=tenant_id,
                    since=since,
                    until=until,
                )
            )
            self._running[question] = task
            task.add_done_callback(lambda done: self._finished(question, done))
        return await asyncio.shield(task)

    def _fresh(self, question: _Question) -> FairnessReport | None:
        kept = self._reports.get(question)
        if kept is None:
            return None
        if kept[0] > self._clock():
            return kept[1]
        del self._reports[question]
        return None

    def _finished(self, question: _Question, task: asyncio.Task[FairnessReport]) -> None:
        del self._running[question]
        if task.cancelled() or task.exception() is not None:  # retrieved: never "unretrieved"
            return
        if self.ttl_s <= 0:
            return
        reports = self._reports
        if len(reports) >= self.max_entries:
            now = self._clock()
            for stale in [q for q, (until, _) in reports.items() if until <= now]:
                del reports[stale]
            while len(reports) >= self.max_entries:
                del reports[next(iter(reports))]  # the oldest
        reports[question] = (self._clock() + self.ttl_s, task.result())
