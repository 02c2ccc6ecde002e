"""``LearningService``: the learning loop's runs, one per model at a time, each an asyncio
task with its progress (docs/learning.md). A run is started here, by hand (``modelgate
learn``, ``POST /admin/models/{m}/learn``) or by the manifest's triggers (``triggers.py``,
every ``learning_trigger_seconds``), and goes through its steps (``run_steps.py``: data
set, training, evaluation, registration, canary); how it ends is recorded here, and each
start and end is audited.

A run's state is ``<model>/.learning/<run id>/run.json`` in the model repository, rewritten
(atomically) at each step (``run_records.py``), so any replica reading the same repository
answers for it; a lock file there keeps two replicas from running one model's loop at once,
refreshed while the run goes on (``run_lock.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modelgate.core.access.audit import AuditEntry, actor_of
from modelgate.core.access.authorization import require_scope
from modelgate.core.access.identity import Principal, Scope
from modelgate.core.access.ports import AuditLog
from modelgate.core.governance.privacy import PrivacyService
from modelgate.core.monitoring.feedback import FeedbackService
from modelgate.core.monitoring.ports import FairnessMetrics
from modelgate.core.serving.manifest import ModelManifest
from modelgate.core.serving.registry import ModelRegistry
from modelgate.core.traffic.rollout import DeploymentService
from modelgate.errors import ErrorKind, ModelgateError, invalid
from modelgate.learning.run_records import MODEL_NAME, STAGES, RunRecords
from modelgate.learning.run_steps import RunSteps
from modelgate.learning.training import TrainerError
from modelgate.learning.triggers import LearningTriggers

__all__ = ["STAGES", "LearningService"]

log = logging.getLogger("modelgate.learning")

#: a run refreshes its lock at each stage and this often while it runs (``run_lock.py``)
_HEARTBEAT_S = 30.0
#: the only runtime a candidate may have: the server loads it (to evaluate and profile it),
#: and an ONNX graph is data, where a pickle or a Python module would be code
CANDIDATE_RUNTIMES = frozenset({"onnxruntime"})
_LISTED = 20
#: what a run id may be
_RUN_ID = re.compile(r"^run_\d{8}T\d{6}_[0-9a-f]{6}$")


def _utc_now() -> datetime:
    return datetime.now(UTC)


class LearningService:
    """The runs of the learning loop over one model repository."""

    def __init__(
        self,
        *,
        repository: Path,
        registry: ModelRegistry,
        feedback: FeedbackService,
        privacy: PrivacyService,
        deployments: DeploymentService,
        audit: AuditLog,
        fairness: FairnessMetrics,
        python: str,
        trigger_interval_s: float = 60.0,
        retention_days: float = 30.0,
        drifting: Callable[[str], bool] | None = None,
        now: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.registry = registry
        self.audit = audit
        self._now = now
        #: the runs' records and locks in the repository
        self.records = RunRecords(repository, now)
        self._tasks: dict[str, asyncio.Task[None]] = {}  # model -> its running run
        #: what a run does, step by step
        self.steps = RunSteps(
            repository=repository, registry=registry, feedback=feedback, privacy=privacy,
            deployments=deployments, fairness=fairness, python=python, records=self.records,
            now=now,
        )  # fmt: skip
        #: when a run starts by itself, and the sweep of what runs leave
        self.triggers = LearningTriggers(
            registry=registry, feedback=feedback, records=self.records, running=self._tasks,
            start=self.start, interval_s=trigger_interval_s, retention_days=retention_days,
            drifting=drifting, now=now,
        )  # fmt: skip

    # -- operators ---------------------------------------------------------------------
    async def start(
        self,
        principal: Principal,
        model: str,
        *,
        trigger: str = "manual",
        source_ip: str | None = None,
    ) -> dict[str, Any]:
        """Start a run of ``model``'s loop; its first state. FAILED_PRECONDITION while one
        runs; INVALID_ARGUMENT for a model without a ``learning`` section."""
        require_scope(principal, Scope.TENANTS_ADMIN)
        manifest = await self.registry.manifest(model)  # NOT_FOUND for an unknown model
        if manifest.learning is None:
            raise invalid(f"model '{model}' has no learning section (docs/learning.md)")
        if manifest.runtime not in CANDIDATE_RUNTIMES:
            raise invalid(
                f"model '{model}' runs on {manifest.runtime}: the learning loop only retrains "
                "onnxruntime models (a candidate is loaded in the server; docs/learning.md)"
            )
        if model in self._tasks:
            raise ModelgateError(
                ErrorKind.FAILED_PRECONDITION, f"a learning run of '{model}' is in progress"
            )
        at = self._now()
        run_id = f"run_{at.strftime('%Y%m%dT%H%M%S')}_{secrets.token_hex(3)}"
        folder = self.records.runs_dir(model) / run_id
        try:
            folder.mkdir(parents=True)
            locked = self.records.lock(model, run_id)
        except OSError as exc:  # a read-only repository, a full disk: nothing can be run
            shutil.rmtree(folder, ignore_errors=True)
            raise ModelgateError(
                ErrorKind.UNAVAILABLE,
                f"the learning run of '{model}' cannot start: the model repository is not "
                f"writable ({exc.strerror or type(exc).__name__})",
            ) from None
        if not locked:
            shutil.rmtree(folder, ignore_errors=True)
            raise ModelgateError(
                ErrorKind.FAILED_PRECONDITION,
                f"a learning run of '{model}' is in progress on another replica",
            )
        run: dict[str, Any] = {
            "id": run_id,
            "model": model,
            "status": "running",
            "stage": STAGES[0],
            "progress": {"completed": 0, "total": len(STAGES)},
            "trigger": trigger,
            "started_by": actor_of(principal),
            "created_at": at.isoformat(),
            "finished_at": None,
            "message": "reading the data set",
            "serving_version": None,
            "version": None,
            "report": {},
        }
        try:
            self.records.save(folder, run)
            await self._audit(
                principal, "learning.start", model, {"run": run_id, "trigger": trigger}, source_ip
            )
        except BaseException as exc:  # not audited, not run: nothing is left held
            message = exc.message if isinstance(exc, ModelgateError) else type(exc).__name__
            with contextlib.suppress(OSError):
                self.records.finish(folder, run, "failed", f"not started: {message}")
            self.records.unlock(model, run_id)
            raise
        task = asyncio.create_task(self._run(principal, manifest, folder, run), name=run_id)
        self._tasks[model] = task
        task.add_done_callback(lambda _t: self._tasks.pop(model, None))
        return dict(run)

    async def get(self, principal: Principal, model: str, run_id: str) -> dict[str, Any]:
        """One run of the model; NOT_FOUND for an unknown model or run."""
        require_scope(principal, Scope.TENANTS_ADMIN)
        await self._known(model)
        if not _RUN_ID.fullmatch(run_id):
            raise ModelgateError(ErrorKind.NOT_FOUND, f"unknown learning run '{run_id}'")
        run = self.records.read(self.records.runs_dir(model) / run_id)
        if run is None:
            raise ModelgateError(ErrorKind.NOT_FOUND, f"unknown learning run '{run_id}'")
        return run

    async def runs(
        self, principal: Principal, model: str, limit: int = _LISTED
    ) -> list[dict[str, Any]]:
        """The model's runs, newest first, without their reports."""
        require_scope(principal, Scope.TENANTS_ADMIN)
        await self._known(model)
        runs = []
        for folder in self.records.folders(model)[:limit]:
            run = self.records.read(folder)
            if run is not None:
                runs.append({k: v for k, v in run.items() if k != "report"})
        return runs

    async def close(self) -> None:
        """Stop the trigger loop and the runs in progress (marked ``interrupted``; the
        repository is left as it was before their step)."""
        self.triggers.stop()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- triggers (triggers.py) --------------------------------------------------------
    async def check_triggers(self) -> list[str]:
        """Start the runs the manifests' triggers call for now; the models started."""
        return await self.triggers.check()

    async def run_triggers(self) -> None:
        """The trigger loop, until :meth:`close` (:meth:`LearningTriggers.run`)."""
        await self.triggers.run()

    def sweep(self) -> dict[str, int]:
        """Delete what ended runs left behind (:meth:`LearningTriggers.sweep`)."""
        return self.triggers.sweep()

    async def sync_versions(self, model: str) -> bool:
        """Reload ``model`` when the repository holds versions this replica has not loaded
        (:meth:`LearningTriggers.sync_versions`). Whether it reloaded."""
        return await self.triggers.sync_versions(model)

    # -- one run -----------------------------------------------------------------------
    async def _run(
        self, principal: Principal, manifest: ModelManifest, folder: Path, run: dict[str, Any]
    ) -> None:
        model = manifest.name
        spec = manifest.learning
        assert spec is not None
        heartbeat = asyncio.create_task(self._heartbeat(model, run["id"]))
        try:
            await self.steps.run(principal, manifest, spec, folder, run)
        except asyncio.CancelledError:
            self.records.finish(folder, run, "interrupted", "the server stopped during the run")
            raise
        except TrainerError as exc:
            run["report"]["training"] = {"error": exc.reason, "log_tail": exc.log_tail}
            self.records.finish(folder, run, "failed", exc.reason)
        except ModelgateError as exc:
            self.records.finish(folder, run, "failed", exc.message)
        except Exception as exc:  # the run's outermost layer: recorded, the server goes on
            log.exception("learning run %s of %s failed", run["id"], model)
            try:
                self.records.finish(folder, run, "failed", f"{type(exc).__name__}: {exc}")
            except Exception:  # the report itself cannot be written: the error and stage stay
                run["report"] = {}
                self.records.finish(folder, run, "failed", f"{type(exc).__name__}: {exc}")
        finally:
            heartbeat.cancel()
            self.records.unlock(model, run["id"])
        outcome = {"run": run["id"], "status": run["status"], "version": run["version"],
                   "message": run["message"]}  # fmt: skip
        with contextlib.suppress(ModelgateError):  # the run's own record says it all
            await self._audit(principal, f"learning.{run['status']}", model, outcome, None)

    # -- helpers -----------------------------------------------------------------------
    async def _known(self, model: str) -> None:
        """NOT_FOUND unless ``model`` is a model of the repository (so that its name is a
        folder name there, never a path elsewhere)."""
        if not MODEL_NAME.fullmatch(model):
            raise ModelgateError(ErrorKind.NOT_FOUND, f"unknown model '{model[:128]}'")
        await self.registry.manifest(model)  # NOT_FOUND for an unknown model

    async def _heartbeat(self, model: str, run_id: str) -> None:
        while True:
            await asyncio.sleep(_HEARTBEAT_S)
            await asyncio.to_thread(self.records.refresh_lock, model, run_id)

    async def _audit(
        self,
        principal: Principal,
        action: str,
        model: str,
        after: dict[str, Any],
        source_ip: str | None,
    ) -> None:
        await self.audit.append(
            AuditEntry(
                actor=actor_of(principal),
                action=action,
                target=f"model:{model}",
                at=self._now(),
                source_ip=source_ip,
                after=after,
            )
        )
