"""The manifest's ``learning`` section: how the learning loop retrains a model from its
feedback (docs/learning.md). Parsed with the rest of the manifest; the loop itself is
:mod:`modelgate.learning`."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "TRAINED_BY_LOOP",
    "ColumnMark",
    "LearningGates",
    "LearningRollout",
    "LearningSpec",
    "LearningTriggers",
    "trained_by_loop",
]

#: what a version the learning loop trained says in its card's ``trained_by``
TRAINED_BY_LOOP = "learning loop"


def trained_by_loop(card: dict[str, Any]) -> bool:
    """Whether a version's card says the learning loop trained it (from tenants' data)."""
    return card.get("trained_by") == TRAINED_BY_LOOP


#: ``package.module:function``, the trainer's entry point
_ENTRY_POINT = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$")

#: ``sensitive``: a personal or protected column, never handed to a trainer; ``identifier``:
#: a key of a person or a record (customer number, account id), never a feature
ColumnMark = Literal["sensitive", "identifier"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LearningGates(_Strict):
    """The task metrics a candidate must reach, on the held-out split, to be registered:
    ``*_drop_max``, ``*_increase_max`` compare it with the serving version (how much worse
    it may be, absolute); calibration is a bound on the candidate alone. An unset gate is
    not checked. Fairness is not here: the manifest's ``fairness.gates`` (the same limits
    canary rollouts keep) are applied to the candidate on the same rows."""

    auc_drop_max: float | None = Field(default=0.01, ge=0, le=1)
    accuracy_drop_max: float | None = Field(default=None, ge=0, le=1)
    log_loss_increase_max: float | None = Field(default=None, ge=0)
    calibration_error_max: float | None = Field(default=None, ge=0, le=1)

    @model_validator(mode="before")
    @classmethod
    def _fairness_is_elsewhere(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for old, new in _MOVED.items():
                if old in value:
                    raise ValueError(
                        f"learning.gates.{old} is fairness.gates.{new}: one set of fairness "
                        "limits gates both the learning loop and canary rollouts"
                    )
        return value


#: fairness limits an earlier shape of ``learning.gates`` had, and where they are now
_MOVED = {
    "demographic_parity_difference_max": "max_demographic_parity_difference",
    "equalized_odds_difference_max": "max_equalized_odds_difference",
}


class LearningRollout(_Strict):
    """The canary a registered candidate starts as (docs/deployments.md, its gates)."""

    steps: tuple[int, ...] = (10, 50, 100)
    step_seconds: float = Field(default=300.0, gt=0, le=86_400)
    min_requests: int = Field(default=50, ge=1)
    max_error_rate_increase: float = Field(default=0.02, ge=0, le=1)
    max_p95_ratio: float = Field(default=1.5, ge=1)
    p95_slack_ms: float = Field(default=5.0, ge=0)

    @field_validator("steps")
    @classmethod
    def _rising(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(not 0 < s <= 100 for s in value) or list(value) != sorted(set(value)):
            raise ValueError("steps must be rising percentages in 1-100")
        return value


class LearningTriggers(_Strict):
    """When the loop starts by itself (besides ``modelgate learn``): once ``labels`` new
    feedback labels arrived since the last run, every ``every_seconds``, and when a drift
    alert of the model fires (``on_drift``). Unset: never."""

    labels: int | None = Field(default=None, ge=1, le=10_000_000)
    every_seconds: float | None = Field(default=None, ge=60, le=365 * 86_400)
    on_drift: bool = False
    #: no automatic run starts sooner than this after the last one ended
    cooldown_seconds: float = Field(default=3600.0, ge=0, le=30 * 86_400)


class LearningSpec(_Strict):
    """The model can be retrained by the learning loop from its consented, labelled traffic."""

    #: ``package.module:function``, called in a subprocess (docs/learning.md, "Trainers")
    trainer: str
    #: handed to the trainer as they are (JSON values)
    options: dict[str, Any] = Field(default_factory=dict)
    #: the labelled predictions of the last ``window_days`` days are the data set
    window_days: float = Field(default=30.0, gt=0, le=3650)
    #: fewer labelled rows with their inputs: the run stops before training
    min_rows: int = Field(default=200, ge=10, le=10_000_000)
    #: the most rows read (the newest win)
    max_rows: int = Field(default=100_000, ge=10, le=10_000_000)
    #: a text value (one element of a BYTES input) longer than this many characters leaves
    #: its row out of the data set (counted in the sanitization report)
    max_text_chars: int = Field(default=10_000, ge=1, le=1_048_576)
    #: the data set's inputs stop at about this many bytes (the newest rows win; the rows
    #: past it are counted in the sanitization report)
    max_dataset_bytes: int = Field(default=512 * 1024 * 1024, ge=1024, le=64 * 1024**3)
    #: when more than one tenant contributes, no tenant's rows are more than this share of
    #: the data set, and one tenant's new labels count for at most this share of
    #: ``triggers.labels`` (docs/learning.md, "Tenants")
    max_tenant_share: float = Field(default=0.5, gt=0, le=1)
    #: environment variables (names) the trainer's process gets besides the basic ones
    environment: tuple[str, ...] = ()
    #: the share of rows held out to evaluate the candidate and the serving version on
    holdout_fraction: float = Field(default=0.25, gt=0.05, lt=0.9)
    #: the split's seed (the same data set gives the same split)
    seed: int = 0
    #: the trainer's process is killed after this long
    timeout_seconds: float = Field(default=600.0, gt=0, le=86_400)
    #: columns (feature names, or whole inputs by name) a trainer must never see
    columns: dict[str, ColumnMark] = Field(default_factory=dict)
    gates: LearningGates = LearningGates()
    rollout: LearningRollout = LearningRollout()
    triggers: LearningTriggers = LearningTriggers()

    @field_validator("trainer")
    @classmethod
    def _entry_point(cls, value: str) -> str:
        if not _ENTRY_POINT.fullmatch(value):
            raise ValueError("trainer must be 'package.module:function'")
        return value

    @field_validator("environment")
    @classmethod
    def _names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", name):
                raise ValueError(f"environment: '{name[:64]}' is not a variable name")
            if name.startswith("MODELGATE_"):
                raise ValueError("environment: modelgate's own settings never reach a trainer")
        return value

    @model_validator(mode="after")
    def _min_below_max(self) -> LearningSpec:
        if self.min_rows > self.max_rows:
            raise ValueError("min_rows must not exceed max_rows")
        return self
