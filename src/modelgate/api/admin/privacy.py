"""``/admin/tenants/{tenant_id}/payload-logging`` and ``/admin/subjects/{subject}``: payload
logging consent, and a data subject's export and erasure (docs/privacy.md)."""

# No `from __future__ import annotations`: FastAPI reads the route signatures at run time.

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request

from modelgate.api.admin.schemas import PayloadLoggingBody, PayloadLoggingOut, SubjectErasureOut
from modelgate.core.governance.privacy import PrivacyService

__all__ = ["add_privacy_routes"]


def add_privacy_routes(
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
