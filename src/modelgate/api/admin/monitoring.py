"""``/admin/models/{model}/monitoring``: drift, confidence and (with a concept monitor)
accuracy of a model's recent traffic."""

# No `from __future__ import annotations`: FastAPI reads the route signatures at run time.

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import FastAPI, Query

from modelgate.core.access.identity import Scope
from modelgate.core.monitoring.concept import ConceptMonitor
from modelgate.core.monitoring.monitor import Monitor
from modelgate.core.serving.catalog import ModelCatalog

__all__ = ["add_monitoring_routes"]


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
        against each version's reference profile (docs/monitoring.md)."""
        # A model the caller may not see answers 404, like an unknown one.
        await catalog.authorize(caller, model, version, Scope.MODELS_READ)
        reports = await monitor.report(model, version)
        versions = [asdict(report) for report in reports]
        if concept is not None:  # accuracy and calibration against the ground truth sent back
            for item in versions:
                item["concept"] = asdict(await concept.report(model, item["version"]))
        manifest = await catalog.registry.manifest(model)
        # what GET /admin/models/{m}/fairness audits (the dashboard asks it for these only)
        protected = [attribute.name for attribute in manifest.protected_attributes]
        return {"model": model, "protected_attributes": protected, "versions": versions}
