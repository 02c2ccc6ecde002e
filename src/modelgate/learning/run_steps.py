"""The steps of one learning run, in order (docs/learning.md):

1. dataset: labelled predictions joined with consented payloads (``dataset.py``),
   sanitized (``sanitization.py``), split per tenant into training and held-out rows;
2. train: the manifest's trainer in a process of its own (``training.py``), its data files
   deleted however training ends;
3. evaluate: the candidate and the serving version on the held-out rows, the gates
   (``evaluation.py``);
4. register: a passing candidate installed as the next version with its lineage, a failing
   one kept aside with its report (``registration.py``);
5. roll out: the models reloaded (the serving versions answer throughout) and the new
   version started as a canary with the deployment's automatic promote and rollback.

Each step writes its part of the run's report and advances the run's record
(``run_records.py``) to the next; a step that cannot go on raises, and ``runs.py``, which
runs the steps as the run's task, records how the run ended and audits it.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from modelgate.core.access.audit import actor_of
from modelgate.core.access.identity import Principal
from modelgate.core.governance.privacy import PrivacyService
from modelgate.core.monitoring.feedback import FeedbackService
from modelgate.core.monitoring.ports import FairnessMetrics
from modelgate.core.serving.learning_spec import TRAINED_BY_LOOP, LearningSpec
from modelgate.core.serving.manifest import ModelManifest
from modelgate.core.serving.ports import VersionSource
from modelgate.core.serving.registry import ModelRegistry
from modelgate.core.traffic.deployments import Canary, CanaryGate, Deployment
from modelgate.core.traffic.rollout import DeploymentService
from modelgate.errors import invalid
from modelgate.learning.dataset import read_labelled_rows
from modelgate.learning.evaluation import check_gates, evaluate_version
from modelgate.learning.registration import RUNS_FOLDER, install_candidate
from modelgate.learning.run_records import RunRecords
from modelgate.learning.sanitization import SanitizedData, sanitize
from modelgate.learning.trainer_api import DATA_FILES
from modelgate.learning.training import run_trainer, write_job
from modelgate.repository.lineage import started_by

__all__ = ["RunSteps", "train_once"]


class RunSteps:
    """The steps of the learning runs over one model repository."""

    def __init__(
        self,
        *,
        repository: Path,
        registry: ModelRegistry,
        feedback: FeedbackService,
        privacy: PrivacyService,
        deployments: DeploymentService,
        fairness: FairnessMetrics,
        python: str,
        records: RunRecords,
        now: Callable[[], datetime],
    ) -> None:
        self.repository = repository
        self.registry = registry
        self.feedback = feedback
        self.privacy = privacy
        self.deployments = deployments
        self.fairness = fairness
        #: the interpreter trainers run with (``MODELGATE_LEARNING_PYTHON``)
        self.python = python
        self.records = records
        self._now = now

    async def run(
        self,
        principal: Principal,
        manifest: ModelManifest,
        spec: LearningSpec,
        folder: Path,
        run: dict[str, Any],
    ) -> None:
        """Take ``run`` through the steps, its record advanced at each; it ends
        ``succeeded`` or ``rejected`` here, or with what a step raised."""
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
