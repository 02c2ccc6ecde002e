"""``/admin/models/{model}/monitoring``: drift, confidence and (with a concept monitor)
accuracy of a model's recent traffic.

The drift windows are the model's, every tenant's requests together (the monitor keeps no
tenant per row), so what a tenant's credential sees of them is cut to what says nothing of
other tenants' traffic: each version's verdicts (its status and drift, each feature's and
output's status, the text drift's status) stay; every figure computed from the rows (counts
of rows, requests and anomalies, PSI, KS, chi-square, live means, class shares, confidence,
text figures) is null. The concept section (accuracy against the ground truth) is read from
the feedback store, which knows whose predictions they are: a tenant sees the figures of its
own labelled predictions. Operators see everything, model-wide. The answer's ``scope`` says
which: ``"model"`` or ``"tenant"`` (docs/monitoring.md)."""

# No `from __future__ import annotations`: FastAPI reads the route signatures at run time.

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import FastAPI, Query

from modelgate.core.access.authorization import is_operator
from modelgate.core.access.identity import Principal, Scope
from modelgate.core.monitoring.concept import ConceptMonitor
from modelgate.core.monitoring.monitor import Monitor
from modelgate.core.serving.catalog import ModelCatalog

__all__ = ["add_monitoring_routes"]

#: what stays of a model-wide report for a tenant: the verdicts (the rest is null)
_VERSION_KEPT = frozenset({"model", "version", "status", "drift", "window_rows", "window_seconds"})
_FEATURE_KEPT = frozenset({"name", "kind", "status"})
_PREDICTION_KEPT = frozenset({"output", "status"})
_TEXT_KEPT = frozenset({"input", "status"})


def add_monitoring_routes(
    app: FastAPI,
    catalog: ModelCatalog,
    monitor: Monitor,
    Caller: Any,  # noqa: N803 - the app's principal dependency, a type alias
    concept: ConceptMonitor | None = None,
) -> None:
    @app.get("/admin/models/{model}/monitoring", tags=["monitoring"])
    async def model_monitoring(
        model: str,
        caller: Caller,
        version: Annotated[
            str | None, Query(description="One version (unset: every loaded version).")
        ] = None,
    ) -> dict[str, Any]:
        """Data drift, prediction drift and confidence of the model's recent traffic
        against each version's reference profile (docs/monitoring.md). A tenant's
        credential sees the verdicts of the model-wide windows, without their figures, and
        the accuracy of its own labelled predictions; an operator's, everything."""
        # A model the caller may not see answers 404, like an unknown one.
        await catalog.authorize(caller, model, version, Scope.MODELS_READ)
        tenant = _tenant_of(caller)
        reports = await monitor.report(model, version)
        versions = [asdict(report) for report in reports]
        if tenant is not None:
            versions = [_verdicts(item) for item in versions]
        if concept is not None:  # accuracy and calibration against the ground truth sent back
            for item in versions:
                found = await concept.report(model, item["version"], tenant_id=tenant)
                item["concept"] = asdict(found)
        manifest = await catalog.registry.manifest(model)
        # what GET /admin/models/{m}/fairness audits (the dashboard asks it for these only)
        protected = [attribute.name for attribute in manifest.protected_attributes]
        return {
            "model": model,
            "scope": "model" if tenant is None else "tenant",
            "protected_attributes": protected,
            "versions": versions,
        }


def _tenant_of(caller: Principal | None) -> str | None:
    """The tenant whose slice the caller sees; None: it sees the whole model."""
    if caller is None or is_operator(caller):
        return None
    return caller.tenant_id


def _verdicts(report: dict[str, Any]) -> dict[str, Any]:
    """A version's report less every figure computed from its rows."""
    kept = {key: (value if key in _VERSION_KEPT else None) for key, value in report.items()}
    kept["features"] = [_only(f, _FEATURE_KEPT) for f in report["features"]]
    kept["predictions"] = [_only(p, _PREDICTION_KEPT) for p in report["predictions"]]
    kept["confidence"] = {}
    if report.get("text") is not None:
        kept["text"] = _only(report["text"], _TEXT_KEPT)
    return kept


def _only(item: dict[str, Any], keep: frozenset[str]) -> dict[str, Any]:
    return {key: (value if key in keep else None) for key, value in item.items()}
