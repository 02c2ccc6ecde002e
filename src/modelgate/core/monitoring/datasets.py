"""Training datasets: labelled predictions, joined with the inputs the consented payload log
kept for the same request (decrypted), one row per labelled prediction row.

A prediction and a payload row belong together when they have the same tenant and model,
and the payload's request id (the request's OIP ``id``, else its transport id) is the
prediction's OIP id or transport id; when an id was reused, the payload row closest in
time wins. Payload rows are read a page of predictions at a time, over the page's time
span, so an export holds one page in memory, not the whole log.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from modelgate.core.access.audit import AuditEntry, actor_of
from modelgate.core.access.authorization import require_scope
from modelgate.core.access.identity import Principal, Scope
from modelgate.core.governance.payloads import open_payload
from modelgate.core.governance.ports import PayloadQuery, PayloadRecord
from modelgate.core.governance.privacy import PrivacyService
from modelgate.core.monitoring.feedback import FeedbackService
from modelgate.core.monitoring.feedback_subjects import exported
from modelgate.core.monitoring.predictions import LabelledPrediction

__all__ = ["export_training_rows", "row_inputs"]

#: how far apart a prediction and its payload row may be dated (both are dated when the
#: inference completes, by two listeners)
_SLACK = timedelta(seconds=5)


async def export_training_rows(
    feedback: FeedbackService,
    privacy: PrivacyService | None,
    principal: Principal,
    write: Callable[[dict[str, Any]], object],
    *,
    model: str,
    version: str | None = None,
    tenant_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> int:
    """Hand each live labelled prediction row of ``model`` to ``write``, with ``inputs``
    (name -> that row's values, flat, row-major) from the payload log where a consented
    row exists (else None); answers how many. Audited (``feedback.export``)."""
    require_scope(principal, Scope.TENANTS_ADMIN)
    joinable = privacy is not None and privacy.cipher is not None
    consenting: set[str] = set()
    if privacy is not None and joinable:
        consenting = {c.tenant_id for c in await privacy.store.list_consents() if c.enabled}
    now = feedback.now()
    count = joined = 0
    pages = feedback.labelled(
        principal, model=model, version=version, tenant_id=tenant_id, since=since, until=until
    )
    async for page in pages:
        payloads: dict[tuple[str, str], list[tuple[datetime, dict[str, Any]]]] = {}
        if privacy is not None and joinable and consenting:
            payloads = await _payloads(privacy, page, model, tenant_id, consenting, now)
        for found in page:
            inputs = _match(payloads, found)
            row = exported(found)
            row["inputs"] = inputs
            joined += inputs is not None
            write(row)
            count += 1
    if privacy is not None:
        await privacy.audit.append(
            AuditEntry(
                actor=actor_of(principal),
                action="feedback.export",
                target=f"model:{model}",
                at=now,
                after={
                    "version": version,
                    "tenant": tenant_id,
                    "since": None if since is None else since.isoformat(),
                    "until": None if until is None else until.isoformat(),
                    "rows": count,
                    "with_inputs": joined,
                },
                tenant_id=tenant_id,
            )
        )
    return count


async def _payloads(
    privacy: PrivacyService,
    page: Sequence[LabelledPrediction],
    model: str,
    tenant_id: str | None,
    consenting: set[str],
    now: datetime,
) -> dict[tuple[str, str], list[tuple[datetime, dict[str, Any]]]]:
    assert privacy.cipher is not None
    first = min(f.prediction.created_at for f in page)
    last = max(f.prediction.created_at for f in page)
    query = PayloadQuery(
        tenant_id=tenant_id,
        model=model,
        since=first - _SLACK,
        until=last + _SLACK,
        live_at=now,
    )
    wanted = {(f.prediction.tenant_id, f.prediction.request_id) for f in page} | {
        (f.prediction.tenant_id, f.prediction.inference_id)
        for f in page
        if f.prediction.inference_id is not None
    }
    found: dict[tuple[str, str], list[tuple[datetime, dict[str, Any]]]] = {}
    while True:
        records: list[PayloadRecord] = await privacy.store.find(query)
        for record in records:
            if record.tenant_id not in consenting:
                continue
            document = open_payload(privacy.cipher, record)
            key = (record.tenant_id, str(document.get("request_id")))
            if key in wanted:
                found.setdefault(key, []).append((record.created_at, document))
        if len(records) < query.limit:
            return found
        query = replace(query, after=(records[-1].created_at, records[-1].id))


def _match(
    payloads: dict[tuple[str, str], list[tuple[datetime, dict[str, Any]]]],
    found: LabelledPrediction,
) -> dict[str, Any] | None:
    p = found.prediction
    candidates = payloads.get((p.tenant_id, p.inference_id or p.request_id)) or payloads.get(
        (p.tenant_id, p.request_id)
    )
    if not candidates:
        return None
    _, document = min(candidates, key=lambda c: abs((c[0] - p.created_at).total_seconds()))
    return row_inputs(document.get("inputs", []), p.row)


def row_inputs(tensors: Sequence[dict[str, Any]], row: int) -> dict[str, Any] | None:
    """Row ``row`` of each stored input tensor (``{"name", "shape", "data"}`` with flat
    data), flat; None when a tensor has no such row."""
    inputs: dict[str, Any] = {}
    for tensor in tensors:
        shape = tensor.get("shape") or []
        data = tensor.get("data") or []
        if not shape or row >= shape[0]:
            return None
        width = math.prod(shape[1:])
        inputs[str(tensor.get("name"))] = data[row * width : (row + 1) * width]
    return inputs
