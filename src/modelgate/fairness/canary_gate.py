"""``AuditedCanaryFairness``: the :class:`~modelgate.core.traffic.ports.CanaryFairness` of
canary rollouts, a fairness audit of the canary version's labelled predictions since its
canary began, judged by :func:`~modelgate.core.monitoring.fairness_gates.fairness_verdict`
against the model's ``fairness.gates`` (docs/fairness.md, "Fairness gates")."""

from __future__ import annotations

from datetime import datetime

from modelgate.core.monitoring.fairness import FairnessAuditor
from modelgate.core.monitoring.fairness_gates import fairness_verdict
from modelgate.core.traffic.ports import FairnessCheck

__all__ = ["AuditedCanaryFairness"]


class AuditedCanaryFairness:
    """Audits every tenant's predictions of the canary version (the rollout is the
    model's, not a tenant's), at most the auditor's ``max_rows`` of them."""

    def __init__(self, auditor: FairnessAuditor) -> None:
        self.auditor = auditor

    async def check(
        self, model: str, version: int, since: datetime, now: datetime
    ) -> FairnessCheck | None:
        manifest = await self.auditor.catalog.registry.manifest(model)
        spec = manifest.fairness
        if spec is None or spec.gates is None:
            return None
        report = await self.auditor.audit(None, model, now=now, version=str(version), since=since)
        audit = next((v for v in report.versions if v.version == str(version)), None)
        verdict = fairness_verdict(spec.gates, audit, min_group_size=report.min_group_size)
        detail = verdict.summary()
        detail.update(
            version=version,
            since=since.isoformat(),
            rows=audit.rows if audit is not None else 0,
            truncated=report.truncated,
            min_group_size=report.min_group_size,
        )
        return FairnessCheck(verdict.state, verdict.reason, detail)
