"""``/admin``: plans, tenants, keys, the audit trail, usage and prices over HTTP, for the
principal that calls (``Authorization: Bearer`` / ``x-api-key``, always required here, whatever
``MODELGATE_AUTH`` says). The interactive docs at ``/admin/docs`` load their assets from
modelgate itself, so they work with no internet."""

# No `from __future__ import annotations` here: FastAPI reads the route signatures at run
# time, and `Caller` is a local alias (it closes over this app's authenticator).

from collections.abc import Callable
from dataclasses import asdict
from datetime import timedelta
from math import isfinite
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException
from starlette.routing import Match

from modelgate import __version__
from modelgate.api.admin.deployments import add_deployment_routes
from modelgate.api.admin.idempotency import add_idempotency, idempotency_dependency
from modelgate.api.admin.openapi import install_openapi
from modelgate.api.admin.schemas import (
    INT64_MAX,
    AuditOut,
    CreatedKeyOut,
    KeyBody,
    KeyOut,
    PayloadLoggingBody,
    PayloadLoggingOut,
    PlanBody,
    PlanOut,
    PriceBody,
    PriceOut,
    QuotaOut,
    RotateBody,
    SubjectErasureOut,
    TenantBody,
    TenantOut,
    UsageOut,
    UsageRowOut,
    VerifyOut,
)
from modelgate.api.credentials import PRINCIPAL, credential_from
from modelgate.api.rest.errors import http_status, retry_after_header
from modelgate.core.access.authentication import Authenticator
from modelgate.core.access.authorization import is_operator, require_scope
from modelgate.core.access.idempotency import IdempotencyService
from modelgate.core.access.identity import Principal, Scope
from modelgate.core.access.tenancy import CreatedKey, TenancyService
from modelgate.core.admission.abuse import AbuseGuard
from modelgate.core.admission.quotas import Quotas
from modelgate.core.admission.usage import UsageQuery, UsageService
from modelgate.core.governance.privacy import PrivacyService
from modelgate.core.monitoring.concept import ConceptMonitor
from modelgate.core.monitoring.monitor import Monitor
from modelgate.core.serving.inference import InferenceService
from modelgate.core.traffic.rollout import DeploymentService
from modelgate.core.traffic.shadow import ShadowRunner
from modelgate.errors import ModelgateError

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
    monitoring: tuple[InferenceService, Monitor] | None = None,
    concept: ConceptMonitor | None = None,
    deployments: tuple[DeploymentService, ShadowRunner | None] | None = None,
    idempotency: IdempotencyService | None = None,
) -> FastAPI:
    """The admin app; the usage and price routes exist when ``usage`` is given. With
    ``abuse``, blocked addresses and keys are refused and refused credentials counted. With
    ``monitoring``, ``/admin/models/{model}/monitoring`` reports drift. With ``idempotency``,
    POST, PUT and DELETE take an ``Idempotency-Key`` (``api/admin/idempotency.py``)."""

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

    app = FastAPIOffline(
        title="modelgate admin API",
        version=__version__,
        docs_url="/admin/docs",
        redoc_url="/admin/redoc",
        openapi_url="/admin/openapi.json",
        static_url="/admin/static",
        # before every route: Idempotency-Key on POST, PUT and DELETE (idempotency.py)
        dependencies=[]
        if idempotency is None
        else [Depends(idempotency_dependency(idempotency, caller_of))],
    )
    if idempotency is not None:
        add_idempotency(app, idempotency)
    install_openapi(app, idempotency=idempotency is not None)

    @app.exception_handler(ModelgateError)
    async def _error(_request: Request, exc: ModelgateError) -> JSONResponse:
        headers = {k.decode(): v.decode() for k, v in retry_after_header(exc)}
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
        _add_usage_routes(app, usage, currency, Caller, ip)
    if payloads is not None:
        _add_payload_routes(app, payloads, Caller, ip)
    if monitoring is not None:
        _add_monitoring_routes(app, *monitoring, Caller, concept)
    if deployments is not None:
        add_deployment_routes(app, *deployments, Caller, ip)
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


def _add_usage_routes(
    app: FastAPI,
    usage: UsageService,
    currency: str,
    Caller: Any,  # noqa: N803 - the app's principal dependency, a type alias
    ip: Callable[[Request], str | None],
) -> None:
    @app.get("/admin/usage", response_model=UsageOut, tags=["usage"])
    async def usage_report(
        caller: Caller,
        tenant: Annotated[
            str | None, Query(description="A tenant id (a tenant's own credential: its own).")
        ] = None,
        key: Annotated[str | None, Query(description="A key id.")] = None,
        model: Annotated[str | None, Query(description="A model name.")] = None,
        since: Annotated[
            str | None,
            Query(description="ISO 8601 date or datetime, inclusive; no zone means UTC."),
        ] = None,
        until: Annotated[
            str | None,
            Query(description="ISO 8601 date or datetime, exclusive; no zone means UTC."),
        ] = None,
        group_by: Annotated[
            str, Query(description="Comma-separated: day, tenant, key, model, version.")
        ] = "day",
    ) -> UsageOut:
        query = UsageQuery.parse(
            tenant=tenant, key=key, model=model, since=since, until=until, group_by=group_by
        )
        rows = await usage.report(caller, query)
        return UsageOut(currency=currency, rows=[UsageRowOut.of(r) for r in rows])

    @app.get("/admin/prices", response_model=list[PriceOut], tags=["usage"])
    async def list_prices(caller: Caller) -> list[PriceOut]:
        return [PriceOut.of(p) for p in await usage.list_prices(caller)]

    @app.put("/admin/prices/{target}", response_model=PriceOut, tags=["usage"])
    async def set_price(target: str, body: PriceBody, caller: Caller, request: Request) -> PriceOut:
        price = await usage.set_price(
            caller, target, body.per_1k_units, body.per_compute_second, ip(request)
        )
        return PriceOut.of(price)

    @app.delete("/admin/prices/{target}", status_code=204, response_class=Response, tags=["usage"])
    async def delete_price(target: str, caller: Caller, request: Request) -> Response:
        await usage.delete_price(caller, target, ip(request))
        return Response(status_code=204)


def _add_monitoring_routes(
    app: FastAPI,
    service: InferenceService,
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
        await service.authorize(caller, model, version, Scope.MODELS_READ)
        reports = await monitor.report(model, version)
        versions = [asdict(report) for report in reports]
        if concept is not None:  # accuracy and calibration against the ground truth sent back
            for item in versions:
                item["concept"] = asdict(await concept.report(model, item["version"]))
        return {"model": model, "versions": versions}


def _add_payload_routes(
    app: FastAPI,
    payloads: PrivacyService,
    Caller: Any,  # noqa: N803 - the app's principal dependency, a type alias
    ip: Callable[[Request], str | None],
) -> None:
    """Payload logging consent, and a data subject's export and erasure (docs/privacy.md)."""
    tenant_filter = Query(
        description="Only this tenant's data (operators; a tenant's own credential: its own)."
    )

    @app.get(
        "/admin/tenants/{tenant_id}/payload-logging",
        response_model=PayloadLoggingOut,
        tags=["privacy"],
    )
    async def payload_logging(tenant_id: str, caller: Caller) -> PayloadLoggingOut:
        """The tenant's consent to payload logging (off until set)."""
        return PayloadLoggingOut.of(await payloads.consent(caller, tenant_id))

    @app.put(
        "/admin/tenants/{tenant_id}/payload-logging",
        response_model=PayloadLoggingOut,
        tags=["privacy"],
    )
    async def set_payload_logging(
        tenant_id: str, body: PayloadLoggingBody, caller: Caller, request: Request
    ) -> PayloadLoggingOut:
        """Opt the tenant in or out; purpose and retention narrow what models allow."""
        consent = await payloads.set_consent(
            caller,
            tenant_id,
            enabled=body.enabled,
            purpose=body.purpose,
            retention_days=body.retention_days,
            source_ip=ip(request),
        )
        return PayloadLoggingOut.of(consent)

    @app.get("/admin/subjects/{subject}/export", tags=["privacy"])
    async def export_subject(
        subject: str,
        caller: Caller,
        request: Request,
        tenant: Annotated[str | None, tenant_filter] = None,
    ) -> dict[str, Any]:
        """Everything kept about one data subject, decrypted (an access request)."""
        return await payloads.export_subject(caller, subject, tenant, ip(request))

    @app.delete("/admin/subjects/{subject}", response_model=SubjectErasureOut, tags=["privacy"])
    async def erase_subject(
        subject: str,
        caller: Caller,
        request: Request,
        tenant: Annotated[str | None, tenant_filter] = None,
    ) -> SubjectErasureOut:
        """Erase everything tied to one data subject; answers how much, per kind of data."""
        erased = await payloads.erase_subject(caller, subject, tenant, ip(request))
        return SubjectErasureOut(erased=erased)
