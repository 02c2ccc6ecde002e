"""``/admin``: plans, tenants, keys, the audit trail, usage and prices over HTTP, for the
principal that calls (``Authorization: Bearer`` / ``x-api-key``, always required here, whatever
``MODELGATE_AUTH`` says). The interactive docs at ``/admin/docs`` load their assets from
modelgate itself, so they work with no internet.

This module builds the app (who calls, the error shape) and holds the plan, tenant, key,
audit and quota routes; each optional group adds its own: ``usage.py`` (usage, prices),
``privacy.py`` (payload logging, data subjects), ``monitoring.py``, ``cards.py`` (model
cards), ``deployments.py``, ``learning.py`` (the learning loop's runs)."""

# No `from __future__ import annotations` here: FastAPI reads the route signatures at run
# time, and `Caller` is a local alias (it closes over this app's authenticator).

from datetime import timedelta
from math import isfinite
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException
from starlette.routing import Match

from modelgate import __version__
from modelgate.api.admin.cards import add_card_routes
from modelgate.api.admin.deployments import add_deployment_routes
from modelgate.api.admin.fairness import add_fairness_routes
from modelgate.api.admin.idempotency import add_idempotency, idempotency_dependency
from modelgate.api.admin.json_body import JsonBodyRoute
from modelgate.api.admin.learning import add_learning_routes
from modelgate.api.admin.monitoring import add_monitoring_routes
from modelgate.api.admin.openapi import install_openapi
from modelgate.api.admin.privacy import add_privacy_routes
from modelgate.api.admin.rate_limits import CHECKED, AdminRateLimits
from modelgate.api.admin.schemas import (
    INT64_MAX,
    AuditOut,
    CreatedKeyOut,
    KeyBody,
    KeyOut,
    PlanBody,
    PlanOut,
    QuotaOut,
    RotateBody,
    TenantBody,
    TenantOut,
    VerifyOut,
)
from modelgate.api.admin.traffic import add_traffic_routes
from modelgate.api.admin.usage import add_usage_routes
from modelgate.api.credentials import PRINCIPAL, credential_from
from modelgate.api.rest.errors import http_status, rate_limit_headers, retry_after_header
from modelgate.core.access.authentication import Authenticator
from modelgate.core.access.authorization import is_operator, require_scope
from modelgate.core.access.identity import Principal, Scope
from modelgate.core.access.tenancy import CreatedKey, TenancyService
from modelgate.core.admission.abuse import AbuseGuard
from modelgate.core.admission.idempotency import IdempotencyService
from modelgate.core.admission.quotas import Quotas
from modelgate.core.admission.usage import UsageService
from modelgate.core.governance.privacy import PrivacyService
from modelgate.core.monitoring.concept import ConceptMonitor
from modelgate.core.monitoring.monitor import Monitor
from modelgate.core.serving.catalog import ModelCatalog
from modelgate.core.traffic.rollout import DeploymentService
from modelgate.core.traffic.shadow import ShadowRunner
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.fairness.audit_cache import FairnessAuditCache
from modelgate.learning.runs import LearningService
from modelgate.observability.metrics import PrometheusMetrics

__all__ = ["build_admin_app"]


def build_admin_app(
    tenancy: TenancyService,
    authenticator: Authenticator,
    *,
    usage: UsageService | None = None,
    currency: str = "USD",
    abuse: AbuseGuard | None = None,
    quotas: Quotas | None = None,
    payloads: PrivacyService | None = None,
    monitoring: tuple[ModelCatalog, Monitor] | None = None,
    concept: ConceptMonitor | None = None,
    fairness: FairnessAuditCache | None = None,
    deployments: tuple[DeploymentService, ShadowRunner | None] | None = None,
    learning: LearningService | None = None,
    idempotency: IdempotencyService | None = None,
    traffic: PrometheusMetrics | None = None,
    rate_limits: AdminRateLimits | None = None,
) -> FastAPI:
    """The admin app; the usage and price routes exist when ``usage`` is given. With
    ``abuse``, blocked addresses and keys are refused and refused credentials counted. With
    ``monitoring``, ``/admin/models/{model}/monitoring`` reports drift. With ``idempotency``,
    POST, PUT and DELETE take an ``Idempotency-Key`` (``api/admin/idempotency.py``). With
    ``traffic``, ``/admin/traffic`` reports requests, errors and latency per model version.
    With ``rate_limits``, each tenant's requests (and fairness audits computed) are rate
    limited (``api/admin/rate_limits.py``). A JSON body is read whatever its declared type
    (``api/admin/json_body.py``)."""

    # The credential headers are the document's security schemes (openapi.py), not parameters.
    async def principal(
        request: Request,
        authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
        x_api_key: Annotated[str | None, Header(include_in_schema=False)] = None,
    ) -> Principal:
        known = request.scope.get(PRINCIPAL)  # RestApp authenticated it before the body
        if isinstance(known, Principal):
            return known
        credential = credential_from(authorization, x_api_key)
        if abuse is None:
            return await authenticator.authenticate(credential)
        host = request.client.host if request.client else None
        return await abuse.authenticate(authenticator, credential, host)

    async def caller_of(request: Request) -> Principal:
        headers = request.headers
        return await principal(request, headers.get("authorization"), headers.get("x-api-key"))

    async def rate_limited(request: Request) -> None:
        """Before every route but the docs pages (which need no credential)."""
        route = request.scope.get("route")
        if request.scope.get(CHECKED):  # spent before the body was read (api/rest/app.py)
            return
        if rate_limits is not None and getattr(route, "include_in_schema", True):
            await rate_limits.request(await caller_of(request))

    # first the rate limit, so a refused request keeps no Idempotency-Key record
    dependencies = [Depends(rate_limited)]
    if idempotency is not None:
        dependencies.append(Depends(idempotency_dependency(idempotency, caller_of)))
    app = FastAPIOffline(
        title="modelgate admin API",
        version=__version__,
        docs_url="/admin/docs",
        redoc_url="/admin/redoc",
        openapi_url="/admin/openapi.json",
        static_url="/admin/static",
        # before every route: the rate limit, Idempotency-Key on POST, PUT and DELETE
        dependencies=dependencies,
    )
    app.router.route_class = JsonBodyRoute  # the routes added from here on (not the docs')
    if idempotency is not None:
        add_idempotency(app, idempotency)
    install_openapi(app, idempotency=idempotency is not None)

    @app.exception_handler(ModelgateError)
    async def _error(_request: Request, exc: ModelgateError) -> JSONResponse:
        headers = {k.decode(): v.decode() for k, v in retry_after_header(exc)}
        if exc.kind is ErrorKind.RATE_LIMITED:
            headers.update((k.decode(), v.decode()) for k, v in rate_limit_headers(exc.details))
        if http_status(exc) == 401:
            headers["www-authenticate"] = 'Bearer realm="modelgate"'
        return JSONResponse({"error": exc.message}, status_code=http_status(exc), headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        """FastAPI's 422, less the input it echoes: an input JSON cannot carry back (``1e999``
        parses to inf) made the answer itself fail (a 500), and a huge one doubled it."""
        return JSONResponse({"detail": [_validation_error(e) for e in exc.errors()]}, 422)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        """No route, or not this method: the admin API's error shape. A 405 lists every
        method of the path in ``Allow`` (Starlette names those of the first route only)."""
        headers = {k: v for k, v in (exc.headers or {}).items() if k.lower() != "allow"}
        if exc.status_code == 405:
            allowed = {
                method
                for route in app.router.routes
                if route.matches(request.scope)[0] is not Match.NONE
                for method in getattr(route, "methods", None) or ()
            }
            headers["allow"] = ", ".join(sorted(allowed))
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=headers)

    Caller = Annotated[Principal, Depends(principal)]  # noqa: N806 - a type alias, not a value

    def ip(request: Request) -> str | None:
        return request.client.host if request.client else None

    def created(key: CreatedKey) -> CreatedKeyOut:
        return CreatedKeyOut(**KeyOut.of(key.record).model_dump(), secret=key.secret)

    @app.get("/admin/plans", response_model=list[PlanOut], tags=["plans"])
    async def list_plans(caller: Caller) -> list[PlanOut]:
        require_scope(caller, Scope.TENANTS_ADMIN)
        return [PlanOut.of(p) for p in await tenancy.store.list_plans()]

    @app.post("/admin/plans", response_model=PlanOut, status_code=201, tags=["plans"])
    async def create_plan(body: PlanBody, caller: Caller, request: Request) -> PlanOut:
        return PlanOut.of(await tenancy.create_plan(caller, body.to_plan(), ip(request)))

    @app.get("/admin/tenants", response_model=list[TenantOut], tags=["tenants"])
    async def list_tenants(caller: Caller) -> list[TenantOut]:
        return [TenantOut.of(t) for t in await tenancy.list_tenants(caller)]

    @app.post("/admin/tenants", response_model=TenantOut, status_code=201, tags=["tenants"])
    async def create_tenant(body: TenantBody, caller: Caller, request: Request) -> TenantOut:
        tenant = await tenancy.create_tenant(caller, body.name, body.plan, ip(request))
        return TenantOut.of(tenant)

    @app.get("/admin/tenants/{tenant_id}/keys", response_model=list[KeyOut], tags=["keys"])
    async def list_keys(tenant_id: str, caller: Caller) -> list[KeyOut]:
        return [KeyOut.of(k) for k in await tenancy.list_keys(caller, tenant_id)]

    @app.post(
        "/admin/tenants/{tenant_id}/keys",
        response_model=CreatedKeyOut,
        status_code=201,
        tags=["keys"],
    )
    async def create_key(
        tenant_id: str, body: KeyBody, caller: Caller, request: Request
    ) -> CreatedKeyOut:
        key = await tenancy.create_key(
            caller,
            tenant_id,
            body.name,
            body.scopes,
            expires_at=body.expires_at,
            source_ip=ip(request),
            requests_per_second=body.requests_per_second,
            burst=body.burst,
        )
        return created(key)

    @app.post("/admin/keys/{key_id}/revoke", response_model=KeyOut, tags=["keys"])
    async def revoke_key(key_id: str, caller: Caller, request: Request) -> KeyOut:
        key = await tenancy.revoke_key(caller, key_id, ip(request))
        authenticator.forget(key.prefix)  # this replica refuses it at once
        return KeyOut.of(key)

    @app.post(
        "/admin/keys/{key_id}/rotate", response_model=CreatedKeyOut, status_code=201, tags=["keys"]
    )
    async def rotate_key(
        key_id: str, caller: Caller, request: Request, body: RotateBody | None = None
    ) -> CreatedKeyOut:
        overlap = timedelta(hours=(body or RotateBody()).overlap_hours)
        return created(await tenancy.rotate_key(caller, key_id, overlap, ip(request)))

    @app.get("/admin/audit", response_model=list[AuditOut], tags=["audit"])
    async def list_audit(
        caller: Caller,
        after_seq: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[AuditOut]:
        require_scope(caller, Scope.AUDIT_READ)
        # Operators read the whole trail; a tenant reads only what concerns it.
        tenant = None if is_operator(caller) else caller.tenant_id
        records = await tenancy.audit.list(after_seq, limit, tenant_id=tenant)
        return [
            AuditOut(
                seq=r.seq,
                at=r.at,
                actor=r.actor,
                action=r.action,
                target=r.target,
                tenant_id=r.tenant_id,
                source_ip=r.source_ip,
                before=dict(r.before) if r.before is not None else None,
                after=dict(r.after) if r.after is not None else None,
                hash=r.hash,
            )
            for r in records
        ]

    @app.get("/admin/audit/verify", response_model=VerifyOut, tags=["audit"])
    async def verify_audit(caller: Caller) -> VerifyOut:
        require_scope(caller, Scope.TENANTS_ADMIN)
        result = await tenancy.audit.verify()
        return VerifyOut(
            ok=result.ok,
            checked=result.checked,
            first_bad_seq=result.first_bad_seq,
            reason=result.reason,
        )

    if usage is not None:
        add_usage_routes(app, usage, currency, Caller, ip)
    if payloads is not None:
        add_privacy_routes(app, payloads, Caller, ip)
    if monitoring is not None:
        add_monitoring_routes(app, *monitoring, Caller, concept)
        add_card_routes(app, monitoring[0], deployments[0] if deployments else None, Caller)
    if fairness is not None:
        add_fairness_routes(app, fairness, Caller, rate_limits)
    if deployments is not None:
        add_deployment_routes(app, *deployments, Caller, ip)
    if learning is not None:
        add_learning_routes(app, learning, Caller, ip)
    if traffic is not None:
        add_traffic_routes(app, traffic, Caller)
    if quotas is not None:

        @app.get("/admin/tenants/{tenant_id}/quotas", response_model=list[QuotaOut], tags=["usage"])
        async def tenant_quotas(tenant_id: str, caller: Caller) -> list[QuotaOut]:
            """Each quota of the tenant's plan: its limit, what is used, when it resets."""
            found = await quotas.report(caller, tenant_id, tenancy.store)
            return [
                QuotaOut(
                    quota=f"{q.unit}_per_{q.period}",
                    limit=q.limit,
                    used=q.used,
                    remaining=max(q.limit - q.used, 0),
                    resets_at=q.resets_at,
                )
                for q in found
            ]

    return app


def _validation_error(error: Any) -> dict[str, Any]:
    found = {"type": error.get("type"), "loc": list(error.get("loc", ())), "msg": error.get("msg")}
    context = error.get("ctx")
    if isinstance(context, dict):  # the bound that was broken, where it is a plain value
        found["ctx"] = {
            key: value
            for key, value in context.items()
            if isinstance(value, str | bool | int) or (isinstance(value, float) and isfinite(value))
        }
    return found
