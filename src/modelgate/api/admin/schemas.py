"""Request and response bodies of the admin API. Requests forbid unknown fields, so a body
cannot smuggle in ``tenant_id``, ``scopes`` or other privileges it was not meant to set.

Every number a request carries is bounded by what stores it (:data:`INT32_MAX` for
``Integer`` columns, :data:`INT64_MAX` for ``BigInteger`` ones; floats finite), so an
out-of-range value is a 422 here rather than a database error (a 500) later."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from modelgate.core.access.identity import ApiKeyRecord, Plan, Tenant
from modelgate.core.access.tenancy import DEFAULT_ROWS_PER_DAY, DEFAULT_TOKENS_PER_DAY
from modelgate.core.admission.usage import Price, UsageRow
from modelgate.core.governance.ports import PayloadConsent

#: the largest value of an ``Integer`` column (PostgreSQL ``integer``)
INT32_MAX = 2**31 - 1
#: the largest value a ``BigInteger`` column (PostgreSQL ``bigint``, SQLite ``INTEGER``, both
#: up to 2**63 - 1) takes from the API: the largest below that a JSON number parsed as a
#: double still holds exactly, so that every client reads the bound as it is written
INT64_MAX = 2**63 - 1024
#: the most requests per second a plan or key may name (more is no limit at all)
MAX_RATE = 1e9

Int32 = Annotated[int, Field(ge=1, le=INT32_MAX)]
Int64 = Annotated[int, Field(ge=1, le=INT64_MAX)]
Rate = Annotated[float, Field(gt=0, le=MAX_RATE, allow_inf_nan=False)]


class _Request(BaseModel):
    # strict: false is not 0 and "1" is not 1 (JSON's own types only; ints do for floats)
    model_config = ConfigDict(extra="forbid", strict=True)


_QUOTAS = frozenset(
    f"{unit}_per_{period}" for unit in ("requests", "rows", "tokens") for period in ("day", "month")
)


class PlanBody(_Request):
    name: str = Field(min_length=1, max_length=63)
    requests_per_second: Rate | None = None
    burst: Int32 | None = None
    requests_per_day: Int64 | None = None
    requests_per_month: Int64 | None = None
    rows_per_day: Int64 | None = None
    rows_per_month: Int64 | None = None
    tokens_per_day: Int64 | None = None
    tokens_per_month: Int64 | None = None
    max_concurrency: Int32 | None = None
    max_batch_size: Int32 | None = None
    #: rows explained (``parameters.explain``) per minute per tenant; null: no limit
    explanations_per_minute: Int32 | None = None
    #: 0 (shed first under overload) to 9 (shed last)
    priority: int = Field(default=0, ge=0, le=9)
    models: list[str] | None = None

    def to_plan(self) -> Plan:
        """The plan; one whose body names no quota at all gets the default rows and tokens
        per day, so a tenant's work is bounded from its first plan (null names one: none)."""
        data = self.model_dump()
        if not self.model_fields_set & _QUOTAS:
            data["rows_per_day"], data["tokens_per_day"] = (
                DEFAULT_ROWS_PER_DAY,
                DEFAULT_TOKENS_PER_DAY,
            )
        models = data.pop("models")
        return Plan(**data, models=tuple(models) if models is not None else None)


class TenantBody(_Request):
    name: str = Field(min_length=1, max_length=63)
    plan: str = Field(min_length=1, max_length=63)


class KeyBody(_Request):
    name: str = Field(default="default", min_length=1, max_length=63)
    scopes: list[str] = Field(default_factory=lambda: ["infer"], min_length=1, max_length=32)
    #: with a time zone (``Z`` or an offset)
    expires_at: AwareDatetime | None = None
    #: the key's own rate limit, on top of its tenant's plan
    requests_per_second: Rate | None = None
    burst: Int32 | None = None


class RotateBody(_Request):
    overlap_hours: float = Field(default=24, ge=0, le=24 * 30, allow_inf_nan=False)


class PlanOut(BaseModel):
    name: str
    requests_per_second: float | None
    burst: int | None
    requests_per_day: int | None
    requests_per_month: int | None
    rows_per_day: int | None
    rows_per_month: int | None
    tokens_per_day: int | None
    tokens_per_month: int | None
    max_concurrency: int | None
    max_batch_size: int | None
    explanations_per_minute: int | None
    priority: int
    models: list[str] | None

    @classmethod
    def of(cls, plan: Plan) -> PlanOut:
        data = asdict(plan)
        data["models"] = list(plan.models) if plan.models is not None else None
        return cls(**data)


class TenantOut(BaseModel):
    id: str
    name: str
    plan: str
    created_at: datetime
    disabled: bool

    @classmethod
    def of(cls, tenant: Tenant) -> TenantOut:
        return cls(
            id=tenant.id,
            name=tenant.name,
            plan=tenant.plan,
            created_at=tenant.created_at,
            disabled=tenant.disabled,
        )


class KeyOut(BaseModel):
    """A key as listed: its prefix, never its hash or secret."""

    id: str
    tenant_id: str
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    requests_per_second: float | None
    burst: int | None

    @classmethod
    def of(cls, key: ApiKeyRecord) -> KeyOut:
        return cls(
            id=key.id,
            tenant_id=key.tenant_id,
            name=key.name,
            prefix=key.prefix,
            scopes=list(key.scopes),
            created_at=key.created_at,
            expires_at=key.expires_at,
            revoked_at=key.revoked_at,
            last_used_at=key.last_used_at,
            requests_per_second=key.requests_per_second,
            burst=key.burst,
        )


class CreatedKeyOut(KeyOut):
    #: the key itself: shown in this answer only, never again
    secret: str


class AuditOut(BaseModel):
    seq: int
    at: datetime
    actor: str
    action: str
    target: str
    tenant_id: str | None
    source_ip: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    hash: str


class VerifyOut(BaseModel):
    ok: bool
    checked: int
    first_bad_seq: int | None
    reason: str


class PriceBody(_Request):
    #: per 1,000 units (tokens for text models, rows otherwise)
    per_1k_units: float = Field(ge=0, le=1e12, allow_inf_nan=False)
    per_compute_second: float = Field(default=0, ge=0, le=1e12, allow_inf_nan=False)


class PriceOut(BaseModel):
    target: str
    per_1k_units: float
    per_compute_second: float
    updated_at: datetime

    @classmethod
    def of(cls, price: Price) -> PriceOut:
        return cls(**asdict(price))


class UsageRowOut(BaseModel):
    """One line of a usage report; the columns not grouped by are null."""

    day: str | None
    tenant_id: str | None
    key_id: str | None
    model: str | None
    version: str | None
    requests: int
    errors: int
    rows: int
    tokens: int
    #: rows explained (docs/explanations.md)
    explanations: int
    latency_ms_avg: float
    latency_ms_max: float
    compute_seconds: float
    cost: float

    @classmethod
    def of(cls, row: UsageRow) -> UsageRowOut:
        return cls(**asdict(row))


class UsageOut(BaseModel):
    currency: str
    rows: list[UsageRowOut]


class QuotaOut(BaseModel):
    quota: str  # e.g. requests_per_day
    limit: int
    used: int
    remaining: int
    resets_at: datetime


class PayloadLoggingBody(_Request):
    enabled: bool
    #: the purpose the tenant consents to; unset: each model's own
    purpose: str | None = Field(default=None, min_length=1, max_length=256)
    #: keep rows at most this long (a model's shorter retention still applies)
    retention_days: int | None = Field(default=None, ge=1, le=3650)


class PayloadLoggingOut(BaseModel):
    tenant_id: str
    enabled: bool
    purpose: str | None
    retention_days: int | None
    updated_at: datetime | None

    @classmethod
    def of(cls, consent: PayloadConsent) -> PayloadLoggingOut:
        return cls(**asdict(consent))


class SubjectErasureOut(BaseModel):
    #: rows erased per kind of data (``payload_logs``, ...)
    erased: dict[str, int]
