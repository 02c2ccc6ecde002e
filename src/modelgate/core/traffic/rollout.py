"""Deployments as operators change them, and as every replica follows them.

:class:`DeploymentService` is the one place a deployment changes: the admin API and the
CLI call :meth:`~DeploymentService.put`, :meth:`~DeploymentService.promote` and
:meth:`~DeploymentService.rollback`; the canary gates' decisions go through the same write.
Each change is checked (:func:`~modelgate.core.traffic.deployments.check_deployment`), written over
the revision it was read at (so of two replicas deciding at once, one wins and the other
sees its decision at the next refresh), recorded in the audit trail, and applied to this
replica's :class:`~modelgate.core.traffic.routing.DeploymentRouter` at once.

Every replica runs :meth:`~DeploymentService.run`: every ``refresh_s`` it re-reads all
deployments (one query) and applies the changed ones, then judges each canary on the
current step's window (:func:`~modelgate.core.traffic.canary.judge`): with a shared
:class:`~modelgate.core.traffic.ports.CanaryWindows` store (Redis), every replica's window of the
step merged; without one, or while it is unreachable, this replica's own. A change made on
one replica therefore reaches the others within ``refresh_s`` plus one query. While the
store is unreachable a replica keeps serving the deployments it last read.

A model whose manifest sets ``fairness.gates`` also has its canary's live fairness judged
(a :class:`~modelgate.core.traffic.ports.CanaryFairness`, at most every
``fairness_interval_s`` per model): a broken gate rolls the canary back as a failing
latency or error gate does, and too few labelled rows to judge hold it at its step.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Collection
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from modelgate.core.access.audit import AuditEntry, actor_of
from modelgate.core.access.authorization import require_scope
from modelgate.core.access.identity import Principal, Scope
from modelgate.core.access.ports import AuditLog
from modelgate.core.traffic.canary import ClusterWindow, Verdict, VerdictKind, Windows, judge, merge
from modelgate.core.traffic.deployments import Deployment, check_deployment, deployment_to_document
from modelgate.core.traffic.ports import (
    CanaryFairness,
    CanaryWindows,
    DeploymentObserver,
    DeploymentStore,
    FairnessCheck,
)
from modelgate.core.traffic.routing import DeploymentRouter
from modelgate.errors import ErrorKind, ModelgateError, invalid

__all__ = ["AUTOMATIC_ACTOR", "DeploymentService"]

log = logging.getLogger("modelgate.deployments")

#: the actor the audit trail names for the canary gates' own decisions
AUTOMATIC_ACTOR = "system:canary-gate"
#: how long a step's shared windows outlive the last replica's exchange
_WINDOW_TTL_S = 3600.0


def _utc_now() -> datetime:
    return datetime.now(UTC)


class DeploymentService:
    def __init__(
        self,
        store: DeploymentStore,
        audit: AuditLog,
        router: DeploymentRouter,
        versions: Callable[[str], Awaitable[Collection[int]]],
        *,
        now: Callable[[], datetime] = _utc_now,
        observer: DeploymentObserver | None = None,
        refresh_s: float = 2.0,
        windows: CanaryWindows | None = None,
        replica_id: str | None = None,
        fairness: CanaryFairness | None = None,
        fairness_interval_s: float = 30.0,
    ) -> None:
        self.store = store
        self.audit = audit
        self.router = router
        #: the model's versions in the repository; NOT_FOUND for an unknown model
        self._versions = versions
        self._now = now
        self.observer = observer
        self.refresh_s = refresh_s
        #: where replicas share their canary windows (None: each judges its own)
        self.windows = windows
        self.replica_id = replica_id or (
            f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        )
        #: each model's last merged window: (deployment revision, the window)
        self._cluster: dict[str, tuple[int, ClusterWindow]] = {}
        self._windows_down = False
        #: judges canaries' fairness gates (None: fairness never gates a rollout)
        self.fairness = fairness
        self.fairness_interval_s = fairness_interval_s
        #: each model's last fairness check: (canary version, its start, checked at, check)
        self._fair: dict[str, tuple[int, datetime | None, datetime, FairnessCheck | None]] = {}

    # -- operators -------------------------------------------------------------------------
    async def get(self, principal: Principal | None, model: str) -> Deployment | None:
        require_scope(principal, Scope.MODELS_READ)
        return await self.store.get(model)

    async def put(
        self, principal: Principal, spec: Deployment, source_ip: str | None = None
    ) -> Deployment:
        """Replace the model's deployment with ``spec`` (its revision and canary state are
        set here: a canary starts at its first step now)."""
        require_scope(principal, Scope.TENANTS_ADMIN)
        versions = await self._versions(spec.model)
        current = await self.store.get(spec.model)
        at = self._now()
        canary = spec.canary
        if canary is not None:
            canary = replace(canary, step=0, step_started_at=at, started_at=at)
        expected = current.revision if current is not None else 0
        deployment = replace(
            spec,
            canary=canary,
            revision=expected + 1,
            updated_at=at,
            updated_by=actor_of(principal),
            note="set",
        )
        check_deployment(deployment, versions)
        await self._write(deployment, current, "deployment.set", actor_of(principal), source_ip)
        return deployment

    async def promote(
        self,
        principal: Principal,
        model: str,
        version: int | None = None,
        source_ip: str | None = None,
    ) -> Deployment:
        """Make ``version`` (default: the canary's) the default and end any split or canary."""
        require_scope(principal, Scope.TENANTS_ADMIN)
        versions = await self._versions(model)
        current = await self.store.get(model)
        if version is None:
            if current is None or current.canary is None:
                raise invalid(f"model '{model}' has no canary: name the version to promote")
            version = current.canary.version
        base = current or Deployment(model=model, default_version=version)
        deployment = _promoted(base, version, self._now(), actor_of(principal), "manual")
        check_deployment(deployment, versions)
        await self._write(deployment, current, "deployment.promote", actor_of(principal), source_ip)
        return deployment

    async def rollback(
        self, principal: Principal, model: str, source_ip: str | None = None
    ) -> Deployment:
        """End the split or canary: the default version takes all traffic again."""
        require_scope(principal, Scope.TENANTS_ADMIN)
        await self._versions(model)
        current = await self.store.get(model)
        if current is None:
            raise ModelgateError(ErrorKind.NOT_FOUND, f"model '{model}' has no deployment")
        if current.canary is None and not current.split:
            raise ModelgateError(
                ErrorKind.FAILED_PRECONDITION,
                f"nothing to roll back: version {current.default_version} of model "
                f"'{model}' serves all traffic",
            )
        deployment = _rolled_back(current, self._now(), actor_of(principal), "manual")
        await self._write(
            deployment, current, "deployment.rollback", actor_of(principal), source_ip
        )
        return deployment

    def status(self, model: str) -> dict[str, Any]:
        """What this replica serves for ``model``, its current canary window and, with
        shared windows, the cluster's (as of this replica's last exchange)."""
        deployment = self.router.deployment(model)
        window = self.router.window(model)
        found: dict[str, Any] = {
            "revision": deployment.revision if deployment is not None else None,
            "canary_window": None
            if window is None
            else {"baseline": window.baseline.summary(), "canary": window.candidate.summary()},
        }
        if self.windows is not None:
            cluster = self._cluster.get(model)
            found["cluster_window"] = None
            if cluster is not None and deployment is not None and cluster[0] == deployment.revision:
                found["cluster_window"] = cluster[1].summary()
        return found

    def gate(self, model: str) -> dict[str, Any] | None:
        """The canary gate's state on the window :meth:`evaluate` last judged (the cluster's
        when windows are shared and exchanged for this revision, else this replica's): the
        verdict were the step over now (``passing``: it would advance, ``failing``: roll
        back, ``waiting``: too few requests), whether its time is up, and why. None without
        a canary."""
        deployment = self.router.deployment(model)
        window = self.router.window(model)
        if deployment is None or deployment.canary is None or window is None:
            return None
        canary = deployment.canary
        judged: Windows = window
        cluster = self._cluster.get(model) if self.windows is not None else None
        if cluster is not None and cluster[0] == deployment.revision:
            judged = cluster[1]
        started = canary.step_started_at or deployment.updated_at or self._now()
        verdict = judge(judged, canary.gate, step_over=True)
        check = self._last_check(deployment)
        verdict = _with_fairness(verdict, check)
        states = {VerdictKind.ADVANCE: "passing", VerdictKind.ROLLBACK: "failing"}
        return {
            "state": states.get(verdict.kind, "waiting"),
            "reason": verdict.reason,
            "step_over": (self._now() - started).total_seconds() >= canary.step_seconds,
            "window": "replica" if judged is window else "cluster",
            # None: the model sets no fairness gates (or they were not checked yet)
            "fairness": _check_view(check, self._fair.get(model)),
        }

    # -- every replica -----------------------------------------------------------------------
    async def refresh(self) -> None:
        """Re-read every deployment and apply those that changed."""
        deployments = await self.store.list()
        changed = self.router.update(deployments)
        if changed:
            log.info("deployments changed: %s", ", ".join(sorted(changed)))
            self._report(changed)

    async def evaluate(self) -> None:
        """Judge each canary's current step (on the cluster's window when windows are
        shared, else on this replica's), and act on it."""
        for deployment in self.router.deployments():
            canary = deployment.canary
            window = self.router.window(deployment.model)
            if canary is None or window is None:
                continue
            judged: Windows = window
            if self.windows is not None:
                judged = await self._shared(deployment, window.snapshot()) or window
            started = canary.step_started_at or deployment.updated_at or self._now()
            over = (self._now() - started).total_seconds() >= canary.step_seconds
            verdict = judge(judged, canary.gate, over)
            check = None
            if verdict.kind is not VerdictKind.ROLLBACK:
                check = await self._check_fairness(deployment)
                verdict = _with_fairness(verdict, check)
            if verdict.kind is not VerdictKind.HOLD:
                evidence = self.status(deployment.model)
                if check is not None:
                    evidence["fairness"] = {"state": check.state, **check.detail}
                await self._decide(deployment, verdict, window_summary=evidence)

    async def run(self) -> None:
        """Refresh and evaluate every ``refresh_s`` until cancelled."""
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self.refresh()
                await self.evaluate()
            except asyncio.CancelledError:
                raise
            except Exception:  # the store is down: keep serving what was last read
                log.warning("could not refresh deployments", exc_info=True)

    async def close(self) -> None:
        if self.windows is not None:
            await self.windows.close()

    # -- internals ---------------------------------------------------------------------------
    async def _check_fairness(self, deployment: Deployment) -> FairnessCheck | None:
        """The canary's fairness check, audited again once ``fairness_interval_s`` passed
        (or the canary changed); None when the model sets no gates. An audit that fails
        holds the canary (an ``insufficient`` check naming the error)."""
        canary = deployment.canary
        if self.fairness is None or canary is None:
            return None
        model, now = deployment.model, self._now()
        began = canary.started_at or canary.step_started_at or deployment.updated_at
        last = self._fair.get(model)
        if (
            last is not None
            and last[:2] == (canary.version, began)
            and (now - last[2]).total_seconds() < self.fairness_interval_s
        ):
            return last[3]
        try:
            check = await self.fairness.check(model, canary.version, began or now, now)
        except ModelgateError as exc:
            log.warning("canary of %s: fairness not audited: %s", model, exc.message)
            check = FairnessCheck("insufficient", f"fairness audit failed: {exc.message}")
        except Exception:  # one model's failing audit must not stop every other rollout
            log.exception("canary of %s: fairness audit failed", model)
            check = FairnessCheck("insufficient", "fairness audit failed (see the server log)")
        self._fair[model] = (canary.version, began, now, check)
        return check

    def _last_check(self, deployment: Deployment) -> FairnessCheck | None:
        last = self._fair.get(deployment.model)
        canary = deployment.canary
        if last is None or canary is None:
            return None
        began = canary.started_at or canary.step_started_at or deployment.updated_at
        return last[3] if last[:2] == (canary.version, began) else None  # this canary's

    async def _shared(
        self, deployment: Deployment, snapshot: dict[str, Any]
    ) -> ClusterWindow | None:
        """Every replica's window of the step, this one's included; None while the
        shared store is unreachable (logged once per outage)."""
        assert self.windows is not None
        model, revision = deployment.model, deployment.revision
        try:
            found = await self.windows.exchange(
                model, revision, self.replica_id, snapshot, _WINDOW_TTL_S
            )
        except ModelgateError as exc:
            if not self._windows_down:
                log.warning("canary windows not shared, judging this replica's: %s", exc)
            self._windows_down = True
            return None
        self._windows_down = False
        cluster = merge(found)
        self._cluster[model] = (revision, cluster)
        return cluster

    async def _decide(
        self, deployment: Deployment, verdict: Verdict, window_summary: dict[str, Any]
    ) -> None:
        canary = deployment.canary
        assert canary is not None
        at = self._now()
        step = f"step {canary.step + 1} ({canary.percent}%)"
        if verdict.kind is VerdictKind.ROLLBACK:
            action = "deployment.rollback"
            note = f"rolled back version {canary.version} at {step}: {verdict.reason}"
            new = _rolled_back(deployment, at, AUTOMATIC_ACTOR, note)
        elif canary.last_step:
            action = "deployment.promote"
            note = f"promoted version {canary.version} after {step}: {verdict.reason}"
            new = _promoted(deployment, canary.version, at, AUTOMATIC_ACTOR, note)
        else:
            action = "deployment.canary_step"
            nxt = canary.step + 1
            note = (
                f"version {canary.version} to {canary.steps[nxt]}% after {step}: {verdict.reason}"
            )
            new = deployment.next_revision(
                at, AUTOMATIC_ACTOR, note, canary=replace(canary, step=nxt, step_started_at=at)
            )
        try:
            await self._write(new, deployment, action, AUTOMATIC_ACTOR, None, window_summary)
        except ModelgateError as exc:
            if exc.kind is not ErrorKind.FAILED_PRECONDITION:
                raise
            # another replica decided first; its decision arrives with the next refresh
            log.info("canary of %s: another replica decided first", deployment.model)
            return
        log.warning("deployment of %s: %s", deployment.model, note)

    async def _write(
        self,
        deployment: Deployment,
        before: Deployment | None,
        action: str,
        actor: str,
        source_ip: str | None,
        evidence: dict[str, Any] | None = None,
    ) -> None:
        expected = before.revision if before is not None else 0
        if not await self.store.put(deployment, expected):
            raise ModelgateError(
                ErrorKind.FAILED_PRECONDITION,
                f"the deployment of model '{deployment.model}' changed meanwhile; read it "
                "and try again",
            )
        after: dict[str, Any] = {"revision": deployment.revision, **_document(deployment)}
        if evidence is not None:
            after["evidence"] = evidence
        await self.audit.append(
            AuditEntry(
                actor=actor,
                action=action,
                target=f"deployment:{deployment.model}",
                at=deployment.updated_at or self._now(),
                source_ip=source_ip,
                before=None
                if before is None
                else {"revision": before.revision, **_document(before)},
                after=after,
            )
        )
        if self.router.update([deployment], complete=False):
            self._report([deployment.model])

    def _report(self, models: list[str]) -> None:
        if self.observer is None:
            return
        for model in models:
            deployment = self.router.deployment(model)
            if deployment is None:
                self.observer.deployment(model, (), "none")
            else:
                self.observer.deployment(model, deployment.weights(), deployment.stage)


def _with_fairness(verdict: Verdict, check: FairnessCheck | None) -> Verdict:
    """The latency and error gates' verdict, with the fairness gates': a broken one rolls
    back whatever the step; too few labelled rows hold a canary that would move on."""
    if check is None or verdict.kind is VerdictKind.ROLLBACK:
        return verdict
    if check.state == "fail":
        return Verdict(VerdictKind.ROLLBACK, check.reason)
    if verdict.kind is VerdictKind.ADVANCE:
        if check.state == "insufficient":
            return Verdict(VerdictKind.HOLD, check.reason)
        return Verdict(VerdictKind.ADVANCE, f"{verdict.reason}; {check.reason}")
    return verdict


def _check_view(
    check: FairnessCheck | None,
    last: tuple[int, datetime | None, datetime, FairnessCheck | None] | None,
) -> dict[str, Any] | None:
    if check is None or last is None:
        return None
    return {
        "state": check.state,
        "reason": check.reason,
        "checked_at": last[2].isoformat(),
        **{k: v for k, v in check.detail.items() if k not in ("state", "reason")},
    }


def _document(deployment: Deployment) -> dict[str, Any]:
    return deployment_to_document(deployment)


def _promoted(base: Deployment, version: int, at: datetime, by: str, note: str) -> Deployment:
    shadow = base.shadow if base.shadow is None or base.shadow.version != version else None
    if note == "manual":
        note = f"promoted version {version} (manual)"
    return base.next_revision(
        at, by, note, default_version=version, split=(), canary=None, shadow=shadow
    )


def _rolled_back(base: Deployment, at: datetime, by: str, note: str) -> Deployment:
    if note == "manual":
        what = f"version {base.canary.version}" if base.canary is not None else "the split"
        note = f"rolled back {what} (manual)"
    return base.next_revision(at, by, note, split=(), canary=None)
