"""When a model's learning loop starts by itself: the manifest's ``learning.triggers``
(docs/learning.md), checked every ``learning_trigger_seconds`` for each model of the
repository. A model is due on its schedule (``every_seconds`` since its last run, or since
the server started), on a drift alert (``on_drift``), or when enough new labels arrived
(``labels``, each tenant's counting for at most its share), and never within
``cooldown_seconds`` of its last run. Each round also reloads the versions another replica
registered and sweeps what runs leave behind: the training data of runs not running now,
and the folders of runs that ended more than ``learning_retention_days`` ago.

The runs themselves are started (and counted as running) by ``runs.py``; this module says
when, as ``admin:learning-trigger``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import shutil
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Protocol

from modelgate.core.access.authentication import ADMIN_TENANT
from modelgate.core.access.identity import Plan, Principal, Scope
from modelgate.core.monitoring.feedback import FeedbackService
from modelgate.core.monitoring.predictions import LabelQuery
from modelgate.core.serving.learning_spec import LearningSpec
from modelgate.core.serving.registry import ModelRegistry
from modelgate.errors import ModelgateError
from modelgate.learning.run_records import MODEL_NAME, RunRecords, ended_at
from modelgate.learning.trainer_api import DATA_FILES

__all__ = ["LearningTriggers", "trigger_principal"]

log = logging.getLogger("modelgate.learning")


def trigger_principal() -> Principal:
    """Who a triggered run acts as (``admin:learning-trigger`` in the audit trail)."""
    return Principal(
        ADMIN_TENANT,
        "learning-trigger",
        frozenset({Scope.TENANTS_ADMIN.value, Scope.MODELS_READ.value}),
        Plan("unlimited"),
        "admin",
    )


class _Start(Protocol):
    """How a run is started (``LearningService.start``)."""

    def __call__(self, principal: Principal, model: str, *, trigger: str) -> Awaitable[object]: ...


class LearningTriggers:
    """The trigger loop of the learning runs over one model repository."""

    def __init__(
        self,
        *,
        registry: ModelRegistry,
        feedback: FeedbackService,
        records: RunRecords,
        running: Mapping[str, asyncio.Task[None]],
        start: _Start,
        interval_s: float,
        retention_days: float,
        drifting: Callable[[str], bool] | None,
        now: Callable[[], datetime],
    ) -> None:
        self.registry = registry
        self.feedback = feedback
        self.records = records
        #: the runs going on in this server, model -> its run's task (kept by ``runs.py``)
        self._running = running
        self._start = start
        self.interval_s = interval_s
        #: run folders (records, rejected candidates) older than this are deleted
        self.retention_days = retention_days
        #: whether a drift alert of the model fires now (None: no alerting)
        self.drifting = drifting
        self._now = now
        self._started = now()
        self._stop = asyncio.Event()

    async def check(self) -> list[str]:
        """Start the runs the manifests' triggers call for now; the models started."""
        started: list[str] = []
        names = await asyncio.to_thread(self.registry.repository.names)
        for model in names:
            if model in self._running:
                continue
            try:
                manifest = await self.registry.manifest(model)
            except ModelgateError:
                continue  # a model that does not load has no loop to run
            spec = manifest.learning
            if spec is None:
                continue
            await self.sync_versions(model)
            reason = await self.due(model, spec)
            if reason is None:
                continue
            try:
                await self._start(trigger_principal(), model, trigger=reason)
            except ModelgateError as exc:
                log.warning(
                    "learning trigger of %s (%s) not started: %s", model, reason, exc.message
                )
                continue
            started.append(model)
        return started

    def sweep(self) -> dict[str, int]:
        """Delete what runs leave behind: the training data of any run not running now (a
        server stopped or crashed mid-training) and the folders (record, rejected candidate)
        of runs that ended more than ``retention_days`` ago. What was deleted, counted."""
        deleted = {"data_files": 0, "runs": 0}
        cutoff = self._now() - timedelta(days=self.retention_days)
        running = {task.get_name() for task in self._running.values()}
        for model in self.registry.repository.names():
            if not MODEL_NAME.fullmatch(model):
                continue
            live = self.records.live(model)
            for folder in self.records.folders(model):
                if folder.name in running or folder.name == live:
                    continue
                for name in DATA_FILES:
                    path = folder / "train" / name
                    if path.exists():
                        path.unlink(missing_ok=True)
                        deleted["data_files"] += 1
                run = self.records.read(folder)
                ended = ended_at(run) if run is not None else None
                if ended is None:  # no readable record: its folder's own age
                    with contextlib.suppress(OSError):
                        ended = datetime.fromtimestamp(folder.stat().st_mtime, UTC)
                if ended is not None and ended < cutoff:
                    shutil.rmtree(folder, ignore_errors=True)
                    deleted["runs"] += 1
        if any(deleted.values()):
            log.info("learning sweep: deleted %(data_files)d data files, %(runs)d runs", deleted)
        return deleted

    async def run(self) -> None:
        """The trigger loop, until :meth:`stop`; each round (and the first, at the server's
        start) sweeps what ended runs left (:meth:`sweep`)."""
        try:
            await asyncio.to_thread(self.sweep)
        except Exception:  # the loop's outermost layer: logged, the next round goes on
            log.exception("learning runs not swept")
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval_s)
            if self._stop.is_set():
                return
            try:
                await asyncio.to_thread(self.sweep)
                await self.check()
            except ModelgateError as exc:  # a database outage: the next round tries again
                log.warning("learning triggers not checked: %s", exc.message)
            except Exception:  # the loop's outermost layer: logged, the next round goes on
                log.exception("learning triggers not checked")

    def stop(self) -> None:
        """End the trigger loop (:meth:`run`) at once."""
        self._stop.set()

    async def sync_versions(self, model: str) -> bool:
        """Reload ``model`` when this replica serves it and the repository holds versions
        it has not loaded (another replica's loop registered one): so every replica serves
        a learned version's canary within a trigger interval. Whether it reloaded."""
        loaded = {v.version for v in self.registry.versions(model)}
        if not loaded:
            return False  # not loaded here: its first use reads the repository anyway
        sources = await asyncio.to_thread(self.registry.repository.versions, model)
        if {s.version for s in sources} <= loaded:
            return False
        log.info("model %s has new versions in the repository: reloading", model)
        await self.registry.load(model)
        return True

    async def due(self, model: str, spec: LearningSpec) -> str | None:
        """Why a run of ``model`` is due now (``schedule``, ``drift``, ``labels``); None
        while none is, or within the cooldown after its last run."""
        triggers = spec.triggers
        if triggers.labels is None and triggers.every_seconds is None and not triggers.on_drift:
            return None
        now = self._now()
        last = self.records.last(model)
        if last is not None:
            ended = last.get("finished_at") or last["created_at"]
            if now - datetime.fromisoformat(ended) < timedelta(seconds=triggers.cooldown_seconds):
                return None
        since = datetime.fromisoformat(last["created_at"]) if last else self._started
        if triggers.every_seconds is not None and now - since >= timedelta(
            seconds=triggers.every_seconds
        ):
            return "schedule"
        if triggers.on_drift and self.drifting is not None and self.drifting(model):
            return "drift"
        if triggers.labels is not None:
            start = since if last else now - timedelta(days=spec.window_days)
            if await self._enough_labels(model, start, now, triggers.labels, spec):
                return "labels"
        return None

    async def _enough_labels(
        self, model: str, since: datetime, now: datetime, wanted: int, spec: LearningSpec
    ) -> bool:
        """Whether ``wanted`` new labels arrived, each tenant's counting for at most
        ``max_tenant_share`` of them when more than one tenant sent any (one tenant alone
        cannot start the shared model's runs by flooding it). Reads at most 10 times ``wanted``
        labelled rows (at most 1,000,000)."""
        cap = max(1, math.ceil(wanted * spec.max_tenant_share))
        counts: Counter[str] = Counter()
        after = None
        budget = min(10 * wanted, 1_000_000)
        while budget > 0:
            page = await self.feedback.store.labelled(
                LabelQuery(model=model, since=since, live_at=now, after=after,
                           limit=min(budget, 1000))
            )  # fmt: skip
            if not page:
                break
            budget -= len(page)
            counts.update(item.prediction.tenant_id for item in page)
            last = page[-1].prediction
            after = (last.created_at, last.id, last.row)
            if _counted(counts, cap) >= wanted:
                return True
        return _counted(counts, cap) >= wanted


def _counted(counts: Counter[str], cap: int) -> int:
    """The labels that count: all of one tenant's; capped per tenant when several sent some."""
    if len(counts) <= 1:
        return sum(counts.values())
    return sum(min(count, cap) for count in counts.values())
