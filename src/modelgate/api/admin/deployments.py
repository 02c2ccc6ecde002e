"""``/admin/models/{model}/deployment``: read and change a model's deployment (operators).

Bodies are checked twice: their shape here (unknown fields, types, ranges, split weights
summing to 100: 422), their meaning in the core (versions the model has, canary schedules:
400 with the reason), so the CLI and the API refuse the same things.
"""

# No `from __future__ import annotations`: FastAPI reads the route signatures at run time.

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Body, FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from modelgate.api.admin.schemas import INT32_MAX
from modelgate.core.access.authorization import require_scope
from modelgate.core.access.identity import Scope
from modelgate.core.traffic.deployments import (
    Canary,
    CanaryGate,
    Deployment,
    Shadow,
    Variant,
    deployment_to_document,
)
from modelgate.core.traffic.rollout import DeploymentService
from modelgate.core.traffic.shadow import ShadowRunner
from modelgate.errors import ErrorKind, ModelgateError

__all__ = ["DeploymentBody", "add_deployment_routes", "deployment_view"]


class _Request(BaseModel):
    # floats are finite everywhere: inf would pass ``ge`` and then fail as JSON (a 500);
    # strict: false is not 0 and "1" is not 1 (JSON's own types only; ints do for floats)
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


Version = Annotated[int, Field(ge=1, le=INT32_MAX)]


class VariantBody(_Request):
    version: Version
    weight: int = Field(ge=0, le=100, description="Percent of the traffic.")


class CanaryBody(_Request):
    version: Version = Field(description="The candidate version.")
    steps: list[Annotated[int, Field(ge=-INT32_MAX, le=INT32_MAX)]] = Field(
        min_length=1, max_length=20, description="Percent per step, e.g. [5, 25, 50, 100]."
    )
    step_seconds: float = Field(ge=1, le=86_400, description="How long each step lasts.")
    min_requests: int = Field(default=50, ge=1, le=INT32_MAX, description="Per version and step.")
    max_error_rate_increase: float = Field(default=0.02, ge=0, le=1)
    max_p95_ratio: float = Field(default=1.5, ge=0, le=1e6)
    p95_slack_ms: float = Field(default=5.0, ge=0, le=1e9)


class ShadowBody(_Request):
    version: Version
    percent: int = Field(default=100, ge=1, le=100, description="Share of requests copied.")


class DeploymentBody(_Request):
    default_version: Version = Field(description="The pinned version (the baseline).")
    split: list[VariantBody] = Field(default_factory=list, max_length=16)
    canary: CanaryBody | None = None
    shadow: ShadowBody | None = None

    @model_validator(mode="after")
    def _weights(self) -> "DeploymentBody":
        if self.split and sum(v.weight for v in self.split) != 100:
            total = sum(v.weight for v in self.split)
            raise ValueError(f"split weights must sum to 100 (they sum to {total})")
        if self.split and self.canary is not None:
            raise ValueError("a deployment has a split or a canary, not both")
        return self

    def to_deployment(self, model: str) -> Deployment:
        canary = self.canary
        return Deployment(
            model=model,
            default_version=self.default_version,
            split=tuple(Variant(v.version, v.weight) for v in self.split),
            canary=None
            if canary is None
            else Canary(
                version=canary.version,
                steps=tuple(canary.steps),
                step_seconds=canary.step_seconds,
                gate=CanaryGate(
                    min_requests=canary.min_requests,
                    max_error_rate_increase=canary.max_error_rate_increase,
                    max_p95_ratio=canary.max_p95_ratio,
                    p95_slack_ms=canary.p95_slack_ms,
                ),
            ),
            shadow=None
            if self.shadow is None
            else Shadow(self.shadow.version, self.shadow.percent),
        )


class PromoteBody(_Request):
    version: Version | None = Field(
        default=None, description="The version to make the default (unset: the canary)."
    )


def deployment_view(deployment: Deployment) -> dict[str, Any]:
    """The deployment as the API and the CLI show it."""
    return {
        "model": deployment.model,
        "revision": deployment.revision,
        "stage": deployment.stage,
        "weights": [
            {"version": version, "percent": percent, "role": role}
            for version, percent, role in deployment.weights()
        ],
        **deployment_to_document(deployment),
        "updated_at": deployment.updated_at.isoformat() if deployment.updated_at else None,
        "updated_by": deployment.updated_by,
    }


def add_deployment_routes(
    app: FastAPI,
    deployments: DeploymentService,
    shadows: ShadowRunner | None,
    Caller: Any,  # noqa: N803 - the app's principal dependency, a type alias
    ip: Callable[[Request], str | None],
) -> None:
    def view(deployment: Deployment) -> dict[str, Any]:
        model = deployment.model
        found = deployment_view(deployment)
        found["replica"] = deployments.status(model)  # what this replica serves and saw
        found["gate"] = deployments.gate(model)  # the canary gate's state (None: no canary)
        found["shadow_report"] = shadows.report(model) if shadows is not None else []
        return found

    @app.get("/admin/deployments", tags=["deployments"])
    async def list_deployments(caller: Caller) -> list[dict[str, Any]]:
        """Every model's deployment (a model without one serves its manifest's default)."""
        require_scope(caller, Scope.TENANTS_ADMIN)
        return [view(found) for found in await deployments.store.list()]

    @app.get("/admin/models/{model}/deployment", tags=["deployments"])
    async def get_deployment(model: str, caller: Caller) -> dict[str, Any]:
        """The model's deployment, this replica's canary window and shadow comparisons."""
        require_scope(caller, Scope.TENANTS_ADMIN)
        found = await deployments.get(caller, model)
        if found is None:
            raise ModelgateError(
                ErrorKind.NOT_FOUND,
                f"model '{model}' has no deployment: its manifest's default version serves",
            )
        return view(found)

    @app.put("/admin/models/{model}/deployment", tags=["deployments"])
    async def put_deployment(
        model: str, body: DeploymentBody, caller: Caller, request: Request
    ) -> dict[str, Any]:
        """Replace the deployment (a canary starts at its first step now)."""
        put = await deployments.put(caller, body.to_deployment(model), ip(request))
        return view(put)

    @app.post("/admin/models/{model}/deployment/promote", tags=["deployments"])
    async def promote_deployment(
        model: str,
        caller: Caller,
        request: Request,
        body: Annotated[PromoteBody | None, Body()] = None,
    ) -> dict[str, Any]:
        """Make the canary (or the named version) the default; ends any split or canary."""
        version = body.version if body is not None else None
        return view(await deployments.promote(caller, model, version, ip(request)))

    @app.post("/admin/models/{model}/deployment/rollback", tags=["deployments"])
    async def rollback_deployment(model: str, caller: Caller, request: Request) -> dict[str, Any]:
        """End the split or canary: the default version takes all traffic again."""
        return view(await deployments.rollback(caller, model, ip(request)))
