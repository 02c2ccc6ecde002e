"""``/admin/traffic``: requests, errors and latency percentiles per model and version, as
this replica counted them since it started (present when the admin app is given metrics).

A tenant's credential reads its own tenant's traffic; an operator's reads every tenant's
together, or one tenant's with ``tenant``. ``usage:read``, like ``/admin/usage``."""

# No `from __future__ import annotations`: FastAPI reads the route signatures at run time.

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import FastAPI, Query
from pydantic import BaseModel, Field

from modelgate.core.access.authorization import is_operator, require_scope
from modelgate.core.access.identity import Scope
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.observability.metrics import PrometheusMetrics
from modelgate.observability.traffic import traffic_of

__all__ = ["TrafficOut", "add_traffic_routes"]


class VersionTrafficOut(BaseModel):
    model: str
    version: str
    requests: int = Field(description="Requests since this replica started, every outcome.")
    errors: dict[str, int] = Field(description="Requests that failed, by outcome.")
    latency_ms: dict[str, float | None] = Field(
        description="p50, p95 and p99 in milliseconds, interpolated in the latency "
        "histogram's buckets as PromQL's histogram_quantile (null: no request yet)."
    )


class TrafficOut(BaseModel):
    at: datetime = Field(description="When this was read.")
    tenant: str | None = Field(description="The tenant counted (null: every tenant).")
    versions: list[VersionTrafficOut]


def add_traffic_routes(
    app: FastAPI,
    metrics: PrometheusMetrics,
    Caller: Any,  # noqa: N803 - the app's principal dependency, a type alias
) -> None:
    @app.get("/admin/traffic", response_model=TrafficOut, tags=["usage"])
    async def traffic(
        caller: Caller,
        tenant: Annotated[
            str | None,
            Query(max_length=128, description="A tenant id (a tenant's own credential: its own)."),
        ] = None,
    ) -> TrafficOut:
        """Requests, errors and latency percentiles per model and version, cumulative since
        this replica started (diff two reads for a rate)."""
        require_scope(caller, Scope.USAGE_READ)
        if not is_operator(caller):
            if tenant is not None and tenant != caller.tenant_id:
                raise ModelgateError(ErrorKind.NOT_FOUND, f"unknown tenant '{tenant}'")
            tenant = caller.tenant_id
        rows = traffic_of(metrics, tenant)
        return TrafficOut(
            at=datetime.now(UTC),
            tenant=tenant,
            versions=[
                VersionTrafficOut(
                    model=r.model,
                    version=r.version,
                    requests=r.requests,
                    errors=r.errors,
                    latency_ms=r.latency_ms,
                )
                for r in rows
            ],
        )
