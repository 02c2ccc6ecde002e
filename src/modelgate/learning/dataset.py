"""The learning loop's data set: the model's labelled predictions of a window joined with the
inputs the consented payload log kept for them (``core/monitoring/datasets.py``, the same
join ``modelgate feedback export`` runs, audited as ``feedback.export``).

What is never read: a tenant's payloads while it does not consent (its rows come without
inputs and are left out), rows past their retention, and anything of an erased subject
(erasure deletes both the prediction and the payload rows). Deduplication is by prediction
row (a later label replaces an earlier one in the store) and then by content: the same
inputs with the same label count once (a client's retries, a replayed batch).

The data set serves every tenant's model, so no tenant may make it up alone: when more than
one tenant contributes, each tenant's rows are at most ``learning.max_tenant_share`` of
``max_rows`` (the newest of its rows), and the rest of the data set is the newest rows of
the others. A flooding tenant displaces no one else's rows.
"""

from __future__ import annotations

import json
import math
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from modelgate.core.access.identity import Principal
from modelgate.core.governance.privacy import PrivacyService
from modelgate.core.monitoring.datasets import export_training_rows
from modelgate.core.monitoring.feedback import FeedbackService

__all__ = ["LabelledRows", "choose_rows", "read_labelled_rows"]


@dataclass(frozen=True)
class LabelledRows:
    """The exported rows (``core/monitoring/feedback_subjects.exported`` plus ``inputs``),
    the newest ``max_rows`` of the window within the tenants' shares, oldest first; how
    many the window held, how many tenants contributed and how many rows were left out
    because their tenant's share was full."""

    rows: list[dict[str, Any]]
    read: int
    tenants: int = 0
    over_share: int = 0


async def read_labelled_rows(
    feedback: FeedbackService,
    privacy: PrivacyService,
    principal: Principal,
    *,
    model: str,
    since: datetime,
    until: datetime,
    max_rows: int,
    max_tenant_share: float = 1.0,
    max_bytes: int | None = None,
) -> LabelledRows:
    held = _Held(max_rows, max_bytes)
    read = await export_training_rows(
        feedback, privacy, principal, held.keep, model=model, since=since, until=until
    )
    rows, over_share = choose_rows(held.kept, max_rows, max_tenant_share)
    return LabelledRows(rows, read, len(held.kept), over_share)


class _Held:
    """The rows held while the window is read: each tenant's newest ``max_rows`` (oldest
    first), so a tenant's flood pushes out its own rows only; and, with ``max_bytes``, the
    rows' inputs at most that many bytes (as JSON) in all, the oldest rows of the tenant
    holding the most bytes going first."""

    def __init__(self, max_rows: int, max_bytes: int | None) -> None:
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.kept: dict[str, deque[tuple[int, dict[str, Any]]]] = {}
        self._sizes: dict[str, deque[int]] = {}
        self._bytes: dict[str, int] = {}
        self._total = 0
        self._order = 0

    def keep(self, row: dict[str, Any]) -> None:
        tenant = str(row.get("tenant_id"))
        size = 0
        if self.max_bytes is not None and row.get("inputs") is not None:
            size = len(json.dumps(row["inputs"], default=str))
        rows = self.kept.setdefault(tenant, deque())
        rows.append((self._order, row))
        self._sizes.setdefault(tenant, deque()).append(size)
        self._bytes[tenant] = self._bytes.get(tenant, 0) + size
        self._total += size
        self._order += 1
        if len(rows) > self.max_rows:
            self._drop_oldest(tenant)
        while self.max_bytes is not None and self._total > self.max_bytes:
            self._drop_oldest(max(self._bytes, key=lambda t: self._bytes[t]))

    def _drop_oldest(self, tenant: str) -> None:
        self.kept[tenant].popleft()
        size = self._sizes[tenant].popleft()
        self._bytes[tenant] -= size
        self._total -= size
        if not self.kept[tenant]:
            del self.kept[tenant], self._sizes[tenant], self._bytes[tenant]


def choose_rows(
    kept: dict[str, deque[tuple[int, dict[str, Any]]]], max_rows: int, share: float
) -> tuple[list[dict[str, Any]], int]:
    """The newest ``max_rows`` of all tenants' (order, row) pairs with at most ``share`` of
    ``max_rows`` of any one tenant's when more than one contributes, oldest first; and how
    many rows the share left out."""
    cap = max_rows if len(kept) <= 1 else max(1, math.floor(max_rows * share))
    newest = sorted((pair for rows in kept.values() for pair in rows), key=lambda p: -p[0])
    taken: dict[str, int] = {}
    chosen: list[tuple[int, dict[str, Any]]] = []
    over = 0
    for order, row in newest:
        if len(chosen) >= max_rows:
            break
        tenant = str(row.get("tenant_id"))
        if taken.get(tenant, 0) >= cap:
            over += 1
            continue
        taken[tenant] = taken.get(tenant, 0) + 1
        chosen.append((order, row))
    chosen.reverse()
    return [row for _, row in chosen], over
