"""The principal a job runs as (core/jobs/worker.py), read again when it runs, not when
it was submitted: a job outlives the request that queued it, and meanwhile its key may be
revoked or expire, its tenant disabled, or its tenant's plan changed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from modelgate.core.access.authentication import ADMIN_TENANT
from modelgate.core.access.identity import Plan, Principal
from modelgate.core.access.ports import IdentityStore
from modelgate.core.jobs.jobs import JobOwner
from modelgate.errors import ErrorKind, ModelgateError

__all__ = ["JobPrincipals"]


class JobPrincipals:
    """The principal a job runs as, re-read when it runs: a job of a key revoked since, or
    of a tenant disabled since, fails; the plan is the tenant's plan now."""

    def __init__(self, store: IdentityStore | None, now: Callable[[], datetime]) -> None:
        self._store = store
        self._now = now

    async def principal(self, owner: JobOwner) -> Principal | None:
        if owner.kind == "anonymous":
            return None
        scopes = frozenset(owner.scopes)
        if owner.kind == "admin" or owner.tenant_id == ADMIN_TENANT:
            return Principal(owner.tenant_id, owner.subject, scopes, Plan("unlimited"), "admin")
        if self._store is None:
            raise ModelgateError(ErrorKind.UNAUTHENTICATED, "no identity store to run the job")
        tenant = await self._store.get_tenant(owner.tenant_id)
        plan = await self._store.get_plan(tenant.plan) if tenant is not None else None
        if tenant is None or plan is None:
            raise ModelgateError(ErrorKind.UNAUTHENTICATED, "the job's tenant no longer exists")
        if tenant.disabled:
            raise ModelgateError(ErrorKind.PERMISSION_DENIED, "the tenant is disabled")
        rate = None
        if owner.kind == "key":
            record = await self._store.get_key(owner.subject)
            now = self._now()
            if record is None or (record.revoked_at is not None and record.revoked_at <= now):
                raise ModelgateError(
                    ErrorKind.UNAUTHENTICATED, "the API key that submitted the job was revoked"
                )
            if record.expires_at is not None and record.expires_at <= now:
                raise ModelgateError(
                    ErrorKind.UNAUTHENTICATED, "the API key that submitted the job has expired"
                )
            if record.requests_per_second is not None:
                rate = (record.requests_per_second, record.burst)
        return Principal(tenant.id, owner.subject, scopes, plan, owner.kind, key_rate=rate)
