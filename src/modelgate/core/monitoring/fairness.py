"""Fairness audits: how a model's decisions and errors differ between the groups of a
protected attribute, from its predictions joined with the ground truth sent back for them
(docs/fairness.md).

Each recorded prediction carries its row's value of every protected attribute the
manifest names (:attr:`~modelgate.core.serving.manifest.ModelManifest.protected_attributes`,
recorded by :class:`~modelgate.core.monitoring.feedback_recorder.FeedbackRecorder`).
:class:`FairnessAuditor` reads the labelled ones of a window, at most ``max_rows`` of
them (the newest) in one bounded query, and hands each (version, attribute)'s labels,
predictions and groups to a :class:`~modelgate.core.monitoring.ports.FairnessMetrics`
(the adapter computes them with Fairlearn: :mod:`modelgate.fairness.fairlearn_metrics`).

A group with fewer than ``min_group_size`` labelled rows is reported with its count and
``sufficient: false``, and its rows are left out of the between-group differences: a
handful of rows would make any difference look large or small by chance. With fewer than
two sufficient groups the differences are None (status ``insufficient data``).

Only binary decisions are audited (class 1 is the positive, "selected" decision, as in the
demo's ``default``); rows whose prediction or label is another class are counted in
``skipped_rows`` and left out.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from modelgate.core.access.authorization import is_operator
from modelgate.core.access.identity import Principal, Scope
from modelgate.core.monitoring.ports import FairnessMetrics, FeedbackStore, GroupFigures
from modelgate.core.monitoring.predictions import LabelQuery
from modelgate.core.serving.catalog import ModelCatalog
from modelgate.errors import ErrorKind, ModelgateError, invalid

__all__ = [
    "DEFAULT_MIN_GROUP_SIZE",
    "AttributeAudit",
    "FairnessAuditor",
    "FairnessReport",
    "VersionAudit",
    "audit_attribute",
]

#: groups with fewer labelled rows are too small to judge (the manifest may set another)
DEFAULT_MIN_GROUP_SIZE = 30

Status = Literal["ok", "insufficient data"]


@dataclass(frozen=True, slots=True)
class AttributeAudit:
    """One protected attribute of one version: each group's figures and the differences
    between the sufficient groups (None when fewer than two are)."""

    attribute: str
    status: Status
    rows: int
    groups: list[GroupFigures]
    demographic_parity_difference: float | None
    demographic_parity_ratio: float | None
    equalized_odds_difference: float | None
    equal_opportunity_difference: float | None


@dataclass(frozen=True, slots=True)
class VersionAudit:
    version: str
    #: labelled rows of the window audited (binary, with a recorded group)
    rows: int
    #: labelled rows left out: not a binary decision or label
    skipped_rows: int
    attributes: list[AttributeAudit]


@dataclass(frozen=True, slots=True)
class FairnessReport:
    model: str
    since: datetime
    until: datetime | None
    #: the tenant whose predictions were read; None: every tenant's
    tenant_id: str | None
    min_group_size: int
    max_rows: int
    #: the window held more labelled rows than ``max_rows``: the newest were audited
    truncated: bool
    versions: list[VersionAudit]


class FairnessAuditor:
    """Fairness figures of a model's labelled predictions.

    Who may audit: a caller who may read the model (``models:read``; a model it may not
    see is NOT_FOUND, as an unknown one). An operator reads every tenant's predictions (or
    one tenant's, ``tenant_id``); anyone else only its own tenant's, and naming another
    tenant is NOT_FOUND. With access control off (``principal`` None), every tenant's."""

    def __init__(
        self,
        store: FeedbackStore,
        catalog: ModelCatalog,
        metrics: FairnessMetrics,
        *,
        max_rows: int = 50_000,
        window: timedelta = timedelta(days=30),
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.metrics = metrics
        self.max_rows = max_rows
        self.window = window

    async def audit(
        self,
        principal: Principal | None,
        model: str,
        *,
        now: datetime,
        version: str | None = None,
        attribute: str | None = None,
        tenant_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> FairnessReport:
        await self.catalog.authorize(principal, model, version, Scope.MODELS_READ)
        manifest = await self.catalog.registry.manifest(model)
        if principal is not None and not is_operator(principal):
            if tenant_id is not None and tenant_id != principal.tenant_id:
                raise ModelgateError(ErrorKind.NOT_FOUND, f"unknown tenant '{tenant_id}'")
            tenant_id = principal.tenant_id
        named = [p.name for p in manifest.protected_attributes]
        if not named:
            raise invalid(f"model '{model}' names no protected attributes (docs/fairness.md)")
        if attribute is not None and attribute not in named:
            raise invalid(f"model '{model}' has no protected attribute '{attribute}': {named}")
        wanted = [attribute] if attribute is not None else named
        start = since if since is not None else now - self.window
        if until is not None and until <= start:
            raise invalid("'until' must be after 'since'")
        minimum = (
            manifest.fairness.min_group_size
            if manifest.fairness is not None
            else DEFAULT_MIN_GROUP_SIZE
        )
        query = LabelQuery(
            model=model,
            version=version,
            tenant_id=tenant_id,
            since=start,
            until=until,
            live_at=now,
            newest_first=True,
            limit=self.max_rows,
        )
        found = await self.store.labelled(query)
        by_version: dict[str, _Columns] = defaultdict(_Columns)
        for item in found:
            p = item.prediction
            columns = by_version[p.version]
            if item.label not in (0, 1) or p.predicted not in (0, 1):
                columns.skipped += 1
                continue
            columns.add(item.label, p.predicted, dict(p.groups))
        versions = await asyncio.to_thread(self._versions, by_version, wanted, minimum)
        return FairnessReport(
            model=model,
            since=start,
            until=until,
            tenant_id=tenant_id,
            min_group_size=minimum,
            max_rows=self.max_rows,
            truncated=len(found) >= self.max_rows,
            versions=versions,
        )

    def _versions(
        self, by_version: dict[str, _Columns], wanted: list[str], minimum: int
    ) -> list[VersionAudit]:
        """Off the event loop: Fairlearn over tens of thousands of rows takes a while."""
        return [
            VersionAudit(
                version=name,
                rows=len(columns.labels),
                skipped_rows=columns.skipped,
                attributes=[self._attribute(columns, a, minimum) for a in wanted],
            )
            for name, columns in sorted(by_version.items(), key=lambda kv: _version_key(kv[0]))
        ]

    def _attribute(self, columns: _Columns, attribute: str, minimum: int) -> AttributeAudit:
        labels: list[int] = []
        predicted: list[int] = []
        groups: list[str] = []
        for label, decision, row_groups in zip(
            columns.labels, columns.predicted, columns.groups, strict=True
        ):
            group = row_groups.get(attribute)
            if group is not None:
                labels.append(label)
                predicted.append(decision)
                groups.append(group)
        return audit_attribute(self.metrics, attribute, labels, predicted, groups, minimum)


def audit_attribute(
    metrics: FairnessMetrics,
    attribute: str,
    labels: list[int],
    predicted: list[int],
    groups: list[str],
    minimum: int,
) -> AttributeAudit:
    """One attribute's audit of binary decisions: each group's figures, and the differences
    between the groups with at least ``minimum`` rows (what audits and the learning loop's
    evaluation report alike)."""
    counts: dict[str, int] = defaultdict(int)
    for group in groups:
        counts[group] += 1
    sufficient = {g for g, n in counts.items() if n >= minimum}
    keep = [i for i, g in enumerate(groups) if g in sufficient]
    kept = (
        [labels[i] for i in keep],
        [predicted[i] for i in keep],
        [groups[i] for i in keep],
    )
    figures = {f.group: f for f in metrics.by_group(*kept)} if keep else {}
    reported = [
        figures.get(group) or GroupFigures(group=group, count=n, sufficient=False)
        for group, n in sorted(counts.items(), key=lambda kv: _version_key(kv[0]))
    ]
    if len(sufficient) < 2:
        return AttributeAudit(
            attribute=attribute,
            status="insufficient data",
            rows=len(groups),
            groups=reported,
            demographic_parity_difference=None,
            demographic_parity_ratio=None,
            equalized_odds_difference=None,
            equal_opportunity_difference=None,
        )
    gaps = metrics.differences(*kept)
    return AttributeAudit(
        attribute=attribute,
        status="ok",
        rows=len(groups),
        groups=reported,
        demographic_parity_difference=gaps.demographic_parity_difference,
        demographic_parity_ratio=gaps.demographic_parity_ratio,
        equalized_odds_difference=gaps.equalized_odds_difference,
        equal_opportunity_difference=gaps.equal_opportunity_difference,
    )


class _Columns:
    """One version's labelled rows, column by column."""

    def __init__(self) -> None:
        self.labels: list[int] = []
        self.predicted: list[int] = []
        self.groups: list[dict[str, str]] = []
        self.skipped = 0

    def add(self, label: int, predicted: int, groups: dict[str, str]) -> None:
        self.labels.append(label)
        self.predicted.append(predicted)
        self.groups.append(groups)


def _version_key(version: str) -> tuple[int, int | str]:
    return (0, int(version)) if version.isdigit() else (1, version)
