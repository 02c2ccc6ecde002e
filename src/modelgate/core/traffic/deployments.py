"""Deployments: which versions of a model serve its traffic, and in what shares.

A model without a deployment serves its manifest's default version, as before. A
deployment pins a ``default_version`` and adds at most one of:

- ``split``: weighted variants (an A/B test), weights in percent summing to 100;
- ``canary``: a candidate version that gets ``steps[i]`` percent of the traffic during step
  ``i`` (the default gets the rest) and moves on every ``step_seconds`` while its gate holds
  (:mod:`modelgate.core.traffic.canary`); a step of 100 at the end means "promote".

and, independently, a ``shadow``: a version that sees a copy of ``percent`` of the requests,
whose answers are compared with the primary's and never returned.

Every change makes a new ``revision``; stores write a deployment only over the revision it
was read at (compare and set), so two replicas deciding at once cannot both win.
:func:`check_deployment` is the one place the rules are written.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from modelgate.errors import invalid

__all__ = [
    "Canary",
    "CanaryGate",
    "Deployment",
    "Shadow",
    "Variant",
    "check_deployment",
    "deployment_from_document",
    "deployment_to_document",
]

#: the longest canary step accepted (a day)
MAX_STEP_SECONDS = 86_400.0


@dataclass(frozen=True, slots=True)
class Variant:
    """One arm of a split: ``weight`` percent of the traffic goes to ``version``."""

    version: int
    weight: int


@dataclass(frozen=True, slots=True)
class CanaryGate:
    """When a canary step passes or fails, comparing the candidate with the default.

    The candidate is rolled back as soon as it has ``min_requests`` requests in the step and
    its error rate exceeds the default's by more than ``max_error_rate_increase`` (absolute,
    0.02 = two points), or its p95 latency exceeds ``max_p95_ratio`` times the default's plus
    ``p95_slack_ms``. It moves on when the step's time is up and both versions have
    ``min_requests`` requests in the step."""

    min_requests: int = 50
    max_error_rate_increase: float = 0.02
    max_p95_ratio: float = 1.5
    p95_slack_ms: float = 5.0


@dataclass(frozen=True, slots=True)
class Canary:
    """A candidate version's rollout; ``step``, ``step_started_at`` and ``started_at`` are
    its state."""

    version: int
    steps: tuple[int, ...]
    step_seconds: float
    gate: CanaryGate = field(default_factory=CanaryGate)
    step: int = 0
    step_started_at: datetime | None = None
    #: when its first step began: the window its fairness gates read (docs/fairness.md)
    started_at: datetime | None = None

    @property
    def percent(self) -> int:
        return self.steps[self.step]

    @property
    def last_step(self) -> bool:
        """The step after this one is promotion (the schedule ends, or ends at 100)."""
        return self.step + 1 >= len(self.steps) or self.steps[self.step + 1] >= 100


@dataclass(frozen=True, slots=True)
class Shadow:
    """``percent`` of the requests are copied to ``version``; its answers are only compared."""

    version: int
    percent: int = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class Deployment:
    model: str
    default_version: int
    split: tuple[Variant, ...] = ()
    canary: Canary | None = None
    shadow: Shadow | None = None
    revision: int = 0
    updated_at: datetime | None = None
    updated_by: str = ""
    #: the last decision taken (a promotion, a rollback and why), for people
    note: str = ""

    def weights(self) -> tuple[tuple[int, int, str], ...]:
        """(version, percent, role) of every serving arm; roles are ``default``, ``split``,
        ``baseline`` and ``canary``."""
        if self.canary is not None:
            share = self.canary.percent
            return (
                (self.default_version, 100 - share, "baseline"),
                (self.canary.version, share, "canary"),
            )
        if self.split:
            return tuple((v.version, v.weight, "split") for v in self.split)
        return ((self.default_version, 100, "default"),)

    @property
    def stage(self) -> str:
        """``stable``, ``split`` or ``canary-<n>of<m>`` (steps counted from 1)."""
        if self.canary is not None:
            runs = sum(1 for s in self.canary.steps if s < 100)
            return f"canary-{self.canary.step + 1}of{runs}"
        return "split" if self.split else "stable"

    def next_revision(self, at: datetime, by: str, note: str = "", **changes: Any) -> Deployment:
        return replace(
            self, revision=self.revision + 1, updated_at=at, updated_by=by, note=note, **changes
        )


def check_deployment(deployment: Deployment, versions: Collection[int]) -> None:
    """INVALID_ARGUMENT, with a message a person can act on, unless ``deployment`` is
    well-formed and names only ``versions`` (the model's versions in the repository)."""
    known = sorted(versions)

    def require_known(version: int, what: str) -> None:
        if version not in versions:
            raise invalid(
                f"{what} {version} is not a version of model '{deployment.model}' "
                f"(it has: {', '.join(map(str, known)) or 'none'})"
            )

    require_known(deployment.default_version, "default_version")
    if deployment.split and deployment.canary is not None:
        raise invalid("a deployment has a split or a canary, not both")
    if deployment.split:
        seen: set[int] = set()
        for variant in deployment.split:
            require_known(variant.version, "split version")
            if variant.version in seen:
                raise invalid(f"split names version {variant.version} twice")
            seen.add(variant.version)
            if not 0 <= variant.weight <= 100:
                raise invalid(f"split weight of version {variant.version} must be 0 to 100")
        total = sum(v.weight for v in deployment.split)
        if total != 100:
            raise invalid(f"split weights must sum to 100 (they sum to {total})")
    canary = deployment.canary
    if canary is not None:
        require_known(canary.version, "canary version")
        if canary.version == deployment.default_version:
            raise invalid("the canary version must differ from default_version")
        steps = canary.steps
        if not steps or any(not 1 <= s <= 100 for s in steps):
            raise invalid("canary steps are percentages from 1 to 100, e.g. [5, 25, 50, 100]")
        if any(b <= a for a, b in itertools.pairwise(steps)):
            raise invalid("canary steps must increase, e.g. [5, 25, 50, 100]")
        if steps[0] >= 100:
            raise invalid("a canary needs at least one step below 100")
        if not 0 <= canary.step < len(steps) or steps[canary.step] >= 100:
            raise invalid("the canary's current step is outside its schedule")
        if not (math.isfinite(canary.step_seconds) and canary.step_seconds >= 1):
            raise invalid("canary step_seconds must be at least 1")
        if canary.step_seconds > MAX_STEP_SECONDS:
            raise invalid(f"canary step_seconds must be at most {MAX_STEP_SECONDS:.0f}")
        gate = canary.gate
        if gate.min_requests < 1:
            raise invalid("canary min_requests must be at least 1")
        for name, value in (
            ("max_error_rate_increase", gate.max_error_rate_increase),
            ("max_p95_ratio", gate.max_p95_ratio),
            ("p95_slack_ms", gate.p95_slack_ms),
        ):
            if not math.isfinite(value) or value < 0:
                raise invalid(f"canary {name} must be a finite number, zero or more")
    shadow = deployment.shadow
    if shadow is not None:
        require_known(shadow.version, "shadow version")
        if shadow.version in {v for v, share, _ in deployment.weights() if share > 0}:
            raise invalid(f"shadow version {shadow.version} already serves traffic")
        if not 1 <= shadow.percent <= 100:
            raise invalid("shadow percent must be 1 to 100")


def deployment_to_document(deployment: Deployment) -> dict[str, Any]:
    """The spec as plain JSON (what stores keep and the audit trail records)."""
    canary = deployment.canary
    return {
        "default_version": deployment.default_version,
        "split": [{"version": v.version, "weight": v.weight} for v in deployment.split],
        "canary": None
        if canary is None
        else {
            "version": canary.version,
            "steps": list(canary.steps),
            "step_seconds": canary.step_seconds,
            "min_requests": canary.gate.min_requests,
            "max_error_rate_increase": canary.gate.max_error_rate_increase,
            "max_p95_ratio": canary.gate.max_p95_ratio,
            "p95_slack_ms": canary.gate.p95_slack_ms,
            "step": canary.step,
            "step_started_at": None
            if canary.step_started_at is None
            else canary.step_started_at.isoformat(),
            "started_at": None if canary.started_at is None else canary.started_at.isoformat(),
        },
        "shadow": None
        if deployment.shadow is None
        else {"version": deployment.shadow.version, "percent": deployment.shadow.percent},
        "note": deployment.note,
    }


def deployment_from_document(
    model: str,
    document: Mapping[str, Any],
    *,
    revision: int = 0,
    updated_at: datetime | None = None,
    updated_by: str = "",
) -> Deployment:
    """The inverse of :func:`deployment_to_document`."""
    raw = document.get("canary")
    canary = None
    if raw is not None:
        started = raw.get("step_started_at")
        began = raw.get("started_at")  # absent in deployments written before it was kept
        canary = Canary(
            version=int(raw["version"]),
            steps=tuple(int(s) for s in raw["steps"]),
            step_seconds=float(raw["step_seconds"]),
            gate=CanaryGate(
                min_requests=int(raw["min_requests"]),
                max_error_rate_increase=float(raw["max_error_rate_increase"]),
                max_p95_ratio=float(raw["max_p95_ratio"]),
                p95_slack_ms=float(raw["p95_slack_ms"]),
            ),
            step=int(raw.get("step", 0)),
            step_started_at=datetime.fromisoformat(started) if started else None,
            started_at=datetime.fromisoformat(began) if began else None,
        )
    shadow = document.get("shadow")
    return Deployment(
        model=model,
        default_version=int(document["default_version"]),
        split=tuple(Variant(int(v["version"]), int(v["weight"])) for v in document["split"]),
        canary=canary,
        shadow=None
        if shadow is None
        else Shadow(int(shadow["version"]), int(shadow.get("percent", 100))),
        revision=revision,
        updated_at=updated_at,
        updated_by=updated_by,
        note=str(document.get("note", "")),
    )
