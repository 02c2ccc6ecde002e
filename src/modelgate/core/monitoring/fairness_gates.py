"""Fairness gates: does one version's fairness audit keep the limits its manifest sets
(``fairness.gates``, :class:`~modelgate.core.serving.manifest.FairnessGates`)?

:func:`fairness_verdict` is a pure function of the gates and a
:class:`~modelgate.core.monitoring.fairness.VersionAudit`: canary rollouts ask it before a
candidate moves on (:mod:`modelgate.fairness.canary_gate`), and anything else that must
decide on a version's fairness (the learning loop's evaluation) can ask it the same way.

Small groups are never judged silently: a group under ``min_group_size`` labelled rows is
left out of the differences (the audit does that) and listed in ``small_groups`` and the
reason. An attribute with fewer than two groups large enough cannot be judged at all: the
verdict is ``insufficient`` (hold, wait for more feedback), never ``pass``; so is a gated
metric Fairlearn leaves undefined (NaN). With
``require_all_groups`` any small group makes it ``insufficient``. A limit broken on the
groups that can be judged is ``fail`` whatever else is unknown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from modelgate.core.monitoring.fairness import AttributeAudit, VersionAudit
from modelgate.core.serving.manifest import FairnessGates

__all__ = ["Breach", "FairnessVerdict", "SmallGroup", "fairness_verdict"]

GateState = Literal["pass", "fail", "insufficient"]

#: (metric of the audit, gate field, whether a value above the limit breaks it)
_LIMITS: tuple[tuple[str, str, bool], ...] = (
    ("demographic_parity_difference", "max_demographic_parity_difference", True),
    ("demographic_parity_ratio", "min_demographic_parity_ratio", False),
    ("equalized_odds_difference", "max_equalized_odds_difference", True),
    ("equal_opportunity_difference", "max_equal_opportunity_difference", True),
)


@dataclass(frozen=True, slots=True)
class Breach:
    """One limit broken on one attribute: ``value`` is above (``op`` ``>``) or below
    (``<``) ``limit``."""

    attribute: str
    metric: str
    value: float
    limit: float
    op: Literal[">", "<"]

    def describe(self) -> str:
        word = "above" if self.op == ">" else "below"
        return f"{self.attribute}: {self.metric} {self.value:.3f} is {word} {self.limit:g}"


@dataclass(frozen=True, slots=True)
class SmallGroup:
    """A group with too few labelled rows to judge (reported, never averaged in)."""

    attribute: str
    group: str
    count: int


@dataclass(frozen=True, slots=True)
class FairnessVerdict:
    state: GateState
    reason: str
    breaches: tuple[Breach, ...] = ()
    small_groups: tuple[SmallGroup, ...] = ()
    #: attributes with fewer than two groups large enough to judge
    undecided: tuple[str, ...] = ()

    def summary(self) -> dict[str, object]:
        """As plain JSON (the deployment's ``gate.fairness``, the audit trail's evidence)."""
        return {
            "state": self.state,
            "reason": self.reason,
            "breaches": [
                {
                    "attribute": b.attribute,
                    "metric": b.metric,
                    "value": round(b.value, 6),
                    "op": b.op,
                    "limit": b.limit,
                }
                for b in self.breaches
            ],
            "small_groups": [
                {"attribute": s.attribute, "group": s.group, "count": s.count}
                for s in self.small_groups
            ],
            "undecided": list(self.undecided),
        }


def fairness_verdict(
    gates: FairnessGates, audit: VersionAudit | None, *, min_group_size: int
) -> FairnessVerdict:
    """Whether ``audit`` (one version's; None: it had no labelled predictions) keeps
    ``gates``: ``fail`` when a limit is broken on the groups large enough to judge,
    ``insufficient`` when some attribute cannot be judged yet, else ``pass``."""
    if audit is None or not audit.attributes:
        return FairnessVerdict(
            "insufficient",
            "fairness not judged yet: no labelled predictions of this version in the window",
        )
    breaches: list[Breach] = []
    small: list[SmallGroup] = []
    undecided: list[str] = []
    for attribute in audit.attributes:
        small.extend(
            SmallGroup(attribute.attribute, g.group, g.count)
            for g in attribute.groups
            if not g.sufficient
        )
        if attribute.status != "ok" or _undefined(gates, attribute):
            undecided.append(attribute.attribute)
            continue
        breaches.extend(_breaches(gates, attribute))
    too_small = "; ".join(
        f"{s.attribute}={s.group} has {s.count} labelled rows (< {min_group_size})" for s in small
    )
    note = f" (too small to judge: {too_small})" if small else ""
    if breaches:
        reason = "fairness gate broken: " + "; ".join(b.describe() for b in breaches)
        return FairnessVerdict("fail", reason + note, tuple(breaches), tuple(small), ())
    if undecided:
        reason = (
            f"fairness not judged yet: fewer than two groups with {min_group_size} labelled "
            f"rows, or a gated metric undefined (no group selected), for {', '.join(undecided)}"
        )
        return FairnessVerdict("insufficient", reason + note, (), tuple(small), tuple(undecided))
    if small and gates.require_all_groups:
        return FairnessVerdict(
            "insufficient",
            f"fairness not judged yet: require_all_groups, and {too_small}",
            (),
            tuple(small),
            (),
        )
    judged = ", ".join(f"{a.attribute} ({a.rows} rows)" for a in audit.attributes)
    return FairnessVerdict("pass", f"fairness gates kept on {judged}{note}", (), tuple(small), ())


def _undefined(gates: FairnessGates, attribute: AttributeAudit) -> bool:
    """A gated metric Fairlearn could not define (NaN: the demographic parity ratio when no
    group is selected at all): it cannot be judged, so it never passes."""
    for metric, field, _ in _LIMITS:
        value: float | None = getattr(attribute, metric)
        if getattr(gates, field) is not None and value is not None and math.isnan(value):
            return True
    return False


def _breaches(gates: FairnessGates, attribute: AttributeAudit) -> list[Breach]:
    found: list[Breach] = []
    for metric, field, upper in _LIMITS:
        limit: float | None = getattr(gates, field)
        value: float | None = getattr(attribute, metric)
        if limit is None or value is None:
            continue
        if value > limit if upper else value < limit:
            found.append(Breach(attribute.attribute, metric, value, limit, ">" if upper else "<"))
    return found
