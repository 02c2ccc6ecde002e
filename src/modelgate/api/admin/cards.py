"""``/admin/models/{model}/versions/{version}/card``: a version's model card, its lineage
record (modelgate/repository/lineage.py) joined with what the server knows of it: the
manifest's signature, batching, anomaly and feedback sections and card text, its role in the
model's deployment and whether it is loaded.

A learned version's lineage holds figures computed from every tenant's traffic (row counts,
the data window, redaction counts, metrics and per-group fairness on held-out rows), so a
tenant's credential reads a card cut to what says nothing of other tenants' data
(``_TENANT_KEPT``: hashes, names, verdicts; the figures are null), as tenant-scoped
monitoring is. Operators see everything. The answer's ``scope`` says which: ``"model"`` or
``"tenant"`` (docs/learning.md, "Model cards").

Reading a card is not audited: the audit trail records changes (and exports of personal
data), not reads of metadata, as the monitoring and deployment reads are not."""

# No `from __future__ import annotations`: FastAPI reads the route signatures at run time.

import asyncio
from typing import Any

from fastapi import FastAPI

from modelgate.core.access.authorization import is_operator
from modelgate.core.access.identity import Principal, Scope
from modelgate.core.serving.catalog import ModelCatalog
from modelgate.core.serving.manifest import ModelManifest
from modelgate.core.serving.ports import VersionSource
from modelgate.core.serving.signature import tensor_metadata
from modelgate.core.traffic.deployments import Deployment
from modelgate.core.traffic.rollout import DeploymentService
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.repository.lineage import file_digest, read_lineage

__all__ = ["add_card_routes", "model_card"]

UNKNOWN_LINEAGE = "unknown (no lineage record)"

#: what a tenant reads of each lineage section computed from traffic: the rest is null (a
#: section not named here is whole; ``fairness`` is null altogether)
_TENANT_KEPT: dict[str, frozenset[str]] = {
    "dataset": frozenset({"name", "source", "sha256", "holdout_sha256", "uri"}),
    "sanitization": frozenset({"fields_dropped", "columns_removed"}),
    "evaluation": frozenset({"against"}),
    "training": frozenset({"trainer", "trainer_version", "run", "algorithm"}),
}
#: of a gate, what a tenant reads (its name and verdict, not the figures it compared)
_GATE_KEPT = frozenset({"gate", "name", "passed"})


def add_card_routes(
    app: FastAPI,
    catalog: ModelCatalog,
    deployments: DeploymentService | None,
    Caller: Any,  # noqa: N803 - the app's principal dependency, a type alias
) -> None:
    @app.get("/admin/models/{model}/versions/{version}/card", tags=["models"])
    async def model_version_card(model: str, version: str, caller: Caller) -> dict[str, Any]:
        """The version's model card: lineage (origin, artifact and data set hashes, builder,
        evaluation, who made it and when), signature, serving sections, deployment role and
        loaded state (docs/model-repository.md, "Lineage and model cards"). A version with no
        lineage record answers ``lineage: null`` and its artifact's hash."""
        # A model the caller may not see answers 404, like an unknown one.
        return await model_card(catalog, deployments, caller, model, version)

    @app.get("/admin/models/{model}/card", tags=["models"])
    async def model_default_card(model: str, caller: Caller) -> dict[str, Any]:
        """The model card of the version the model serves by default: its deployment's
        default version, else its manifest's ``default_version``, else its newest."""
        return await model_card(catalog, deployments, caller, model, None)


async def model_card(
    catalog: ModelCatalog,
    deployments: DeploymentService | None,
    caller: Principal | None,
    model: str,
    version: str | None,
) -> dict[str, Any]:
    """The card of ``model`` ``version`` (None: the default one) as ``caller`` may read it
    (NOT_FOUND otherwise)."""
    await catalog.authorize(caller, model, version, Scope.MODELS_READ)
    sources = await asyncio.to_thread(catalog.registry.repository.versions, model)
    deployment = await deployments.get(caller, model) if deployments is not None else None
    if deployment is not None:
        default: int | None = deployment.default_version
    else:
        default = sources[-1].manifest.default_version if sources else None
        if default is None and sources:
            default = sources[-1].version
    wanted = str(default) if version is None else version
    source = next((s for s in sources if str(s.version) == wanted), None)
    if source is None:
        raise ModelgateError(
            ErrorKind.NOT_FOUND, f"model '{model}' has no version '{wanted}' in its repository"
        )
    found = await asyncio.to_thread(_from_disk, source)
    card: dict[str, Any] = {"model": model, "version": source.version, **found}
    card.update(_serving(source.manifest))
    card["deployment"] = _deployment(deployment, source.version, default)
    card["state"] = _state(catalog, model, source.version)
    operator = caller is None or is_operator(caller)
    card["scope"] = "model" if operator else "tenant"
    if not operator:
        _tenant_view(card)
    return card


def _tenant_view(card: dict[str, Any]) -> None:
    """Cut ``card`` to what a tenant may read: no figure computed from the traffic."""
    lineage = card.get("lineage")
    if isinstance(lineage, dict):
        lineage = dict(lineage)
        for section, keep in _TENANT_KEPT.items():
            found = lineage.get(section)
            if isinstance(found, dict):
                kept = {k: (v if k in keep else None) for k, v in found.items()}
                if section == "evaluation":
                    kept["metrics"] = _names(found.get("metrics"))
                    kept["candidate"] = _names(found.get("candidate"))
                    kept["serving"] = _names(found.get("serving"))
                    gates = found.get("gates")
                    if isinstance(gates, list):
                        kept["gates"] = [
                            {k: v for k, v in g.items() if k in _GATE_KEPT}
                            for g in gates
                            if isinstance(g, dict)
                        ]
                lineage[section] = kept
        if "fairness" in lineage:
            lineage["fairness"] = None
        card["lineage"] = lineage
    text = card.get("card")
    learned = isinstance(lineage, dict) and lineage.get("origin") == "learning-loop"
    if learned and isinstance(text, dict) and isinstance(text.get("validation_metrics"), dict):
        card["card"] = {**text, "validation_metrics": _names(text["validation_metrics"])}


def _names(metrics: Any) -> Any:
    """Metric names without their values."""
    return {name: None for name in metrics} if isinstance(metrics, dict) else None


def _from_disk(source: VersionSource) -> dict[str, Any]:
    """The lineage record, the artifact's present hash and whether the two agree."""
    manifest = source.manifest
    read = read_lineage(source.path)
    artifact: dict[str, Any] = {"file": manifest.artifact}
    try:
        artifact.update(file_digest(f"{source.path}/{manifest.artifact}"))
    except OSError as exc:  # a remote model has no file; a broken one says so
        artifact["problem"] = exc.strerror or type(exc).__name__
    recorded = (read.record or {}).get("artifact")
    matches = None
    if isinstance(recorded, dict) and "sha256" in artifact:
        matches = recorded.get("sha256") == artifact["sha256"]
    artifact["matches_lineage"] = matches
    return {
        "lineage": read.record,
        "lineage_status": "recorded"
        if read.record is not None and read.problem is None
        else (read.problem or UNKNOWN_LINEAGE),
        "artifact": artifact,
    }


def _serving(manifest: ModelManifest) -> dict[str, Any]:
    """What the manifest says of the version: its card text, signature and serving sections."""

    def section(value: Any) -> Any:
        return None if value is None else value.model_dump(mode="json")

    return {
        "card": manifest.card,
        "runtime": manifest.runtime,
        "platform": manifest.platform,
        "inputs": [tensor_metadata(spec) for spec in manifest.inputs],
        "outputs": [tensor_metadata(spec) for spec in manifest.outputs],
        "batching": section(manifest.batching),
        "anomaly": section(manifest.anomaly),
        "feedback": section(manifest.feedback),
        "labels": manifest.labels,
    }


def _deployment(found: Deployment | None, version: int, default: int | None) -> dict[str, Any]:
    """The version's role and traffic share in the model's deployment; without a deployment,
    the manifest's default version serves (``default_version``, else the newest)."""
    if found is None:
        serves = version == default
        return {
            "role": "default" if serves else "none",
            "percent": 100 if serves else 0,
            "deployment": False,
        }
    for arm, percent, role in found.weights():
        if arm == version:
            return {"role": role, "percent": percent, "deployment": True}
    if found.shadow is not None and found.shadow.version == version:
        return {"role": "shadow", "percent": found.shadow.percent, "deployment": True}
    return {"role": "none", "percent": 0, "deployment": True}


def _state(catalog: ModelCatalog, model: str, version: int) -> str:
    """READY, LOADING, UNAVAILABLE, ... as the repository index says; UNAVAILABLE when the
    version is not loaded."""
    for loaded in catalog.registry.versions(model):
        if loaded.version == version:
            return loaded.state.value
    return "UNAVAILABLE"
