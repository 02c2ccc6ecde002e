"""``LearningService``: the learning loop's runs, one per model at a time, each an asyncio
task with its progress (docs/learning.md):

1. dataset: labelled predictions joined with consented payloads (``dataset.py``),
   sanitized (``sanitization.py``), split into training and held-out rows;
2. train: the manifest's trainer in a process of its own (``training.py``);
3. evaluate: the candidate and the serving version on the held-out rows, the gates
   (``evaluation.py``);
4. register: a passing candidate installed as the next version with its lineage, a failing
   one kept aside with its report (``registration.py``);
5. roll out: the models reloaded (the serving versions answer throughout) and the new
   version started as a canary with the deployment's automatic promote and rollback.

A run's state is ``<model>/.learning/<run id>/run.json`` in the model repository, rewritten
(atomically) at each step, so any replica reading the same repository answers for it; a
lock file there keeps two replicas from running one model's loop at once. Runs start by
hand (``modelgate learn``, ``POST /admin/models/{m}/learn``) or by the manifest's triggers
(``check_triggers``, every ``learning_trigger_seconds``). Each start and end is audited.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import secrets
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from modelgate.core.access.audit import AuditEntry, actor_of
from modelgate.core.access.authentication import ADMIN_TENANT
from modelgate.core.access.authorization import require_scope
from modelgate.core.access.identity import Plan, Principal, Scope
from modelgate.core.access.ports import AuditLog
from modelgate.core.governance.privacy import PrivacyService
from modelgate.core.monitoring.feedback import FeedbackService
from modelgate.core.monitoring.ports import FairnessMetrics
from modelgate.core.monitoring.predictions import LabelQuery
from modelgate.core.serving.learning_spec import TRAINED_BY_LOOP, LearningSpec
from modelgate.core.serving.manifest import ModelManifest
from modelgate.core.serving.ports import VersionSource
from modelgate.core.serving.registry import ModelRegistry
from modelgate.core.traffic.deployments import Canary, CanaryGate, Deployment
from modelgate.core.traffic.rollout import DeploymentService
from modelgate.errors import ErrorKind, ModelgateError, invalid
from modelgate.learning.dataset import read_labelled_rows
from modelgate.learning.evaluation import check_gates, evaluate_version
from modelgate.learning.registration import RUNS_FOLDER, install_candidate
from modelgate.learning.run_records import STAGES, RunRecords, ended_at
from modelgate.learning.sanitization import SanitizedData, sanitize
from modelgate.learning.trainer_api import DATA_FILES
from modelgate.learning.training import TrainerError, run_trainer, write_job
from modelgate.repository.lineage import started_by

__all__ = ["STAGES", "LearningService", "trigger_principal"]

log = logging.getLogger("modelgate.learning")

#: a run refreshes its lock at each stage and this often while it runs (``run_lock.py``)
_HEARTBEAT_S = 30.0
#: the only runtime a candidate may have: the server loads it (to evaluate and profile it),
#: and an ONNX graph is data, where a pickle or a Python module would be code
CANDIDATE_RUNTIMES = frozenset({"onnxruntime"})
_LISTED = 20
#: what a run id and a model name may be (a model's folder name, as the repository reads it)
_RUN_ID = re.compile(r"^run_\d{8}T\d{6}_[0-9a-f]{6}$")
_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def trigger_principal() -> Principal:
    """Who a triggered run acts as (``admin:learning-trigger`` in the audit trail)."""
    return Principal(
        ADMIN_TENANT,
        "learning-trigger",
        frozenset({Scope.TENANTS_ADMIN.value, Scope.MODELS_READ.value}),
        Plan("unlimited"),
        "admin",
    )


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
        self.repository = repository
        self.registry = registry
        self.feedback = feedback
        self.privacy = privacy
        self.deployments = deployments
        self.audit = audit
        self.fairness = fairness
        #: the interpreter trainers run with (``MODELGATE_LEARNING_PYTHON``)
        self.python = python
        self.trigger_interval_s = trigger_interval_s
        #: run folders (records, rejected candidates) older than this are deleted
        self.retention_days = retention_days
        #: whether a drift alert of the model fires now (None: no alerting)
        self.drifting = drifting
        self._now = now
        #: the runs' records and locks in the repository
        self.records = RunRecords(repository, now)
        self._tasks: dict[str, asyncio.Task[None]] = {}  # model -> its running run
        self._started = now()
        self._stop = asyncio.Event()

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

    # -- triggers ----------------------------------------------------------------------
    async def check_triggers(self) -> list[str]:
        """Start the runs the manifests' triggers call for now; the models started."""
        started: list[str] = []
        names = await asyncio.to_thread(self.registry.repository.names)
        for model in names:
            if model in self._tasks:
                continue
            try:
                manifest = await self.registry.manifest(model)
            except ModelgateError:
                continue  # a model that does not load has no loop to run
            spec = manifest.learning
            if spec is None:
                continue
            await self.sync_versions(model)
            reason = await self._due(model, spec)
            if reason is None:
                continue
            try:
                await self.start(trigger_principal(), model, trigger=reason)
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
        running = {task.get_name() for task in self._tasks.values()}
        for model in self.registry.repository.names():
            if not _MODEL.fullmatch(model):
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

    async def run_triggers(self) -> None:
        """The trigger loop, until :meth:`close`; each round (and the first, at the server's
        start) sweeps what ended runs left (:meth:`sweep`)."""
        try:
            await asyncio.to_thread(self.sweep)
        except Exception:  # the loop's outermost layer: logged, the next round goes on
            log.exception("learning runs not swept")
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.trigger_interval_s)
            if self._stop.is_set():
                return
            try:
                await asyncio.to_thread(self.sweep)
                await self.check_triggers()
            except ModelgateError as exc:  # a database outage: the next round tries again
                log.warning("learning triggers not checked: %s", exc.message)
            except Exception:  # the loop's outermost layer: logged, the next round goes on
                log.exception("learning triggers not checked")

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

    async def close(self) -> None:
        """Stop the trigger loop and the runs in progress (marked ``interrupted``; the
        repository is left as it was before their step)."""
        self._stop.set()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _due(self, model: str, spec: LearningSpec) -> str | None:
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

    # -- one run -----------------------------------------------------------------------
    async def _run(
        self, principal: Principal, manifest: ModelManifest, folder: Path, run: dict[str, Any]
    ) -> None:
        model = manifest.name
        spec = manifest.learning
        assert spec is not None
        heartbeat = asyncio.create_task(self._heartbeat(model, run["id"]))
        try:
            await self._steps(principal, manifest, spec, folder, run)
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

    async def _steps(
        self,
        principal: Principal,
        manifest: ModelManifest,
        spec: LearningSpec,
        folder: Path,
        run: dict[str, Any],
    ) -> None:
        model = manifest.name
        report: dict[str, Any] = run["report"]
        # 1. dataset
        until = self._now()
        since = until - timedelta(days=spec.window_days)
        found = await read_labelled_rows(
            self.feedback, self.privacy, principal, model=model, since=since, until=until,
            max_rows=spec.max_rows, max_tenant_share=spec.max_tenant_share,
            max_bytes=spec.max_dataset_bytes,
        )  # fmt: skip
        data = await asyncio.to_thread(sanitize, found.rows, manifest, spec)
        train, holdout = _split(data, spec)
        report["dataset"] = {
            "window": {"since": since.isoformat(), "until": until.isoformat()},
            "labelled_rows_in_window": found.read,
            "tenants": found.tenants,
            "rows_over_tenant_share": found.over_share,
            "rows": len(data),
            "training_rows": len(train),
            "holdout_rows": len(holdout),
            "sha256": data.digest(train),
            "bytes": int(sum(a.nbytes for a in data.trainer_inputs(train).values())),
            "holdout_sha256": data.digest(holdout),
        }
        report["sanitization"] = data.report
        if len(data) < spec.min_rows:
            raise invalid(
                f"not enough data: {len(data)} labelled rows with consented inputs, "
                f"learning.min_rows is {spec.min_rows}"
            )
        if len(set(data.labels[train].tolist())) < 2:
            raise invalid("the training rows hold one class only")
        self.records.advance(folder, run, "train", "training the candidate")
        # 2. train
        work = folder / "train"
        artifact = await asyncio.to_thread(
            write_job, work, manifest, data.trainer_inputs(train), data.labels[train], data.kept,
            spec.options, spec.seed,
        )  # fmt: skip
        began = time.monotonic()
        answer = await train_once(work, spec, self.python)
        report["training"] = {
            "trainer": spec.trainer,
            "trainer_version": answer.get("trainer_version"),
            "options": spec.options,
            "seconds": round(time.monotonic() - began, 3),
            "answer": answer.get("answer", {}),
        }
        evaluating = "evaluating the candidate and the serving version"
        self.records.advance(folder, run, "evaluate", evaluating)
        # 3. evaluate
        serving = await self._serving_source(model)
        run["serving_version"] = serving.version if serving is not None else None
        inputs = {name: array[holdout] for name, array in data.inputs.items()}
        labels = data.labels[holdout]
        groups = {a: [v[i] for i in holdout.tolist()] for a, v in data.groups.items()}
        reference = serving or (await self._any_source(model))
        candidate_source = VersionSource(0, str(artifact.parent), reference.manifest)
        candidate = await asyncio.to_thread(
            evaluate_version, candidate_source, inputs, labels, groups, self.fairness
        )
        baseline = None
        if serving is not None:
            baseline = await asyncio.to_thread(
                evaluate_version, serving, inputs, labels, groups, self.fairness
            )
        gates = check_gates(spec.gates, candidate, baseline)
        passed = all(g["passed"] for g in gates)
        report["evaluation"] = {
            "holdout_rows": len(labels),
            "candidate": candidate,
            "serving": baseline,
            "serving_version": run["serving_version"],
            "gates": gates,
            "passed": passed,
        }
        self.records.advance(folder, run, "register", "registering" if passed else "rejected")
        # 4. register, or keep aside
        if not passed:
            failed = ", ".join(g["detail"] for g in gates if not g["passed"])
            report["candidate_kept"] = f"{RUNS_FOLDER}/{folder.name}/train/candidate"
            message = f"the candidate failed its gates: {failed}"
            self.records.finish(folder, run, "rejected", message)
            return
        card = {
            "algorithm": str(report["training"]["answer"].get("algorithm", spec.trainer)),
            "trained_by": TRAINED_BY_LOOP,
            "learning_run": run["id"],
            "validation_metrics": {
                k: v for k, v in candidate["metrics"].items() if isinstance(v, float)
            },
        }
        lineage = {
            "parent": None
            if serving is None
            else {"model": model, "version": serving.version, "relation": "retrained"},
            "dataset": {
                **report["dataset"],
                "name": f"{model} feedback",
                "rows": report["dataset"]["training_rows"],
                "source": "consented payloads joined with feedback labels",
            },
            "sanitization": data.report,
            "training": {**report["training"], "run": run["id"]},
            "evaluation": {
                "against": f"version {run['serving_version']}, on the same held-out rows",
                "metrics": candidate["metrics"],
                "candidate": candidate["metrics"],
                "serving": None if baseline is None else baseline["metrics"],
                "gates": gates,
            },
            "fairness": {"candidate": candidate["fairness"],
                         "serving": None if baseline is None else baseline["fairness"]},
            "by": f"{actor_of(principal)} ({run['trigger']}) on {started_by()}",
        }  # fmt: skip
        number = await asyncio.to_thread(
            install_candidate,
            self.repository / model,
            reference,
            artifact,
            card=card,
            lineage=lineage,
            profile_inputs={name: array[train] for name, array in data.inputs.items()},
        )
        shutil.rmtree(artifact.parent, ignore_errors=True)  # installed: no second copy
        run["version"] = number
        self.records.advance(folder, run, "rollout", f"version {number} registered; rolling out")
        # 5. roll out
        await self.registry.load(model)  # beside the serving versions, swapped when loaded
        report["rollout"] = await self._canary(principal, model, number, serving, spec)
        self.records.finish(folder, run, "succeeded", report["rollout"]["note"])

    async def _canary(
        self,
        principal: Principal,
        model: str,
        number: int,
        serving: VersionSource | None,
        spec: LearningSpec,
    ) -> dict[str, Any]:
        current = await self.deployments.get(principal, model)
        if current is not None and current.canary is not None:
            return {
                "canary": None,
                "note": f"version {number} registered, not rolled out: version "
                f"{current.canary.version} is in a canary now",
            }
        rollout = spec.rollout
        baseline = current.default_version if current is not None else None
        if baseline is None:
            baseline = serving.version if serving is not None else number
        canary = Canary(
            version=number,
            steps=rollout.steps,
            step_seconds=rollout.step_seconds,
            gate=CanaryGate(
                min_requests=rollout.min_requests,
                max_error_rate_increase=rollout.max_error_rate_increase,
                max_p95_ratio=rollout.max_p95_ratio,
                p95_slack_ms=rollout.p95_slack_ms,
            ),
        )
        base = current or Deployment(model=model, default_version=baseline)
        deployment = await self.deployments.put(
            principal, replace(base, default_version=baseline, split=(), canary=canary)
        )
        return {
            "canary": {"version": number, "baseline": baseline, "steps": list(rollout.steps),
                       "step_seconds": rollout.step_seconds},
            "deployment_revision": deployment.revision,
            "note": f"version {number} is a canary against version {baseline}",
        }  # fmt: skip

    # -- helpers -----------------------------------------------------------------------
    async def _known(self, model: str) -> None:
        """NOT_FOUND unless ``model`` is a model of the repository (so that its name is a
        folder name there, never a path elsewhere)."""
        if not _MODEL.fullmatch(model):
            raise ModelgateError(ErrorKind.NOT_FOUND, f"unknown model '{model[:128]}'")
        await self.registry.manifest(model)  # NOT_FOUND for an unknown model

    async def _serving_source(self, model: str) -> VersionSource | None:
        """The version that answers requests naming none: the deployment's default, else
        the manifest's, else the highest."""
        sources = await asyncio.to_thread(self.registry.repository.versions, model)
        if not sources:
            return None
        deployment = await self.deployments.store.get(model)
        wanted = deployment.default_version if deployment is not None else None
        wanted = wanted or sources[-1].manifest.default_version or sources[-1].version
        return next((s for s in sources if s.version == wanted), sources[-1])

    async def _any_source(self, model: str) -> VersionSource:
        sources = await asyncio.to_thread(self.registry.repository.versions, model)
        if not sources:
            raise invalid(f"model '{model}' has no version to take a signature from")
        return sources[-1]

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


def _split(data: SanitizedData, spec: LearningSpec) -> tuple[Any, Any]:
    """(training rows, held-out rows) as index arrays: per tenant (stratified, so that each
    tenant holds out its own share and no tenant's rows make up the evaluation beyond its
    share of the data set), a seeded shuffle, so the same data set gives the same split."""
    rng = np.random.default_rng(spec.seed)
    strata: dict[str, list[int]] = {}
    for index, tenant in enumerate(data.tenants or [""] * len(data)):
        strata.setdefault(tenant, []).append(index)
    train: list[int] = []
    held: list[int] = []
    for tenant in sorted(strata):
        rows = np.asarray(strata[tenant])[rng.permutation(len(strata[tenant]))]
        count = round(len(rows) * spec.holdout_fraction)
        held.extend(rows[:count].tolist())
        train.extend(rows[count:].tolist())
    return np.sort(np.asarray(train, dtype=np.int64)), np.sort(np.asarray(held, dtype=np.int64))


def _counted(counts: Counter[str], cap: int) -> int:
    """The labels that count: all of one tenant's; capped per tenant when several sent some."""
    if len(counts) <= 1:
        return sum(counts.values())
    return sum(min(count, cap) for count in counts.values())


async def train_once(work: Path, spec: LearningSpec, python: str) -> dict[str, Any]:
    """The trainer's answer on the job in ``work``; however training ends (an answer, a
    failure, the time limit, the server stopping), the job's data files are deleted."""
    try:
        return await run_trainer(
            work, spec.trainer, python=python, timeout_s=spec.timeout_seconds,
            environment=spec.environment,
        )  # fmt: skip
    finally:
        _delete_data_files(work)


def _delete_data_files(work: Path) -> None:
    for name in DATA_FILES:
        (work / name).unlink(missing_ok=True)
