"""``/admin/models/{model}/fairness``: a fairness audit of the model's labelled predictions
(docs/fairness.md), answered from the audit cache (:mod:`modelgate.fairness.audit_cache`);
an audit the caller's request computes is charged to its tenant's audit budget
(:mod:`modelgate.api.admin.rate_limits`)."""

# No `from __future__ import annotations`: FastAPI reads the route signatures at run time.

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import FastAPI, Query

from modelgate.api.admin.rate_limits import AdminRateLimits
from modelgate.core.admission.usage import parse_instant
from modelgate.fairness.audit_cache import FairnessAuditCache

__all__ = ["add_fairness_routes"]


def add_fairness_routes(
    app: FastAPI,
    audits: FairnessAuditCache,
    Caller: Any,  # noqa: N803 - the app's principal dependency, a type alias
    limits: AdminRateLimits | None = None,
) -> None:
    @app.get("/admin/models/{model}/fairness", tags=["monitoring"])
    async def model_fairness(
        model: str,
        caller: Caller,
        version: Annotated[
            str | None, Query(description="One version (unset: every version in the window).")
        ] = None,
        attribute: Annotated[
            str | None,
            Query(description="One protected attribute (unset: each the manifest names)."),
        ] = None,
        since: Annotated[
            str | None,
            Query(
                description="ISO 8601 date or datetime, inclusive; no zone means UTC (unset: "
                "the last fairness_window_seconds)."
            ),
        ] = None,
        until: Annotated[
            str | None,
            Query(description="ISO 8601 date or datetime, exclusive; no zone means UTC."),
        ] = None,
        tenant: Annotated[
            str | None,
            Query(description="Only this tenant's predictions (operators; others: their own)."),
        ] = None,
    ) -> dict[str, Any]:
        """Selection rate, accuracy, true and false positive rates per group of each
        protected attribute, and the demographic parity difference and ratio, equalized
        odds difference and equal opportunity difference between the groups with at least
        ``min_group_size`` labelled rows, from the model's predictions joined with their
        feedback labels (computed with Fairlearn; docs/fairness.md). The same question
        asked again within ``fairness_cache_seconds`` gets the same report."""

        async def charge() -> None:
            if limits is not None:
                await limits.audit(caller)

        report = await audits.audit(
            caller,
            model,
            now=datetime.now(UTC),
            version=version,
            attribute=attribute,
            tenant_id=tenant,
            since=parse_instant(since, "since") if since else None,
            until=parse_instant(until, "until") if until else None,
            before_computing=charge,
        )
        document = asdict(report)
        document["since"] = report.since.isoformat()
        document["until"] = None if report.until is None else report.until.isoformat()
        return document
