"""The model manifest (``model.yaml``): runtime, signature, batching and card of a model.

Parsed and validated here, away from the file format, so that a repository on disk, a load
request carrying ``parameters.config`` and a test all build the same object.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from modelgate.core.serving.artifacts import check_relative
from modelgate.core.serving.explain_spec import (
    ExplainSpec,
    check_explain,
    explained_column,
    explained_output,
)
from modelgate.core.serving.learning_spec import LearningSpec
from modelgate.core.serving.tensors import DATATYPES
from modelgate.errors import ModelgateError, invalid

__all__ = [
    "AnomalySpec",
    "BatchingPolicy",
    "CacheSpec",
    "EmbeddingSpec",
    "ExplainSpec",
    "FairnessGates",
    "FairnessSpec",
    "FeedbackSpec",
    "LearningSpec",
    "ModelManifest",
    "PayloadLoggingSpec",
    "ProtectedAttribute",
    "RequestLimits",
    "StageSpec",
    "TensorSpec",
    "explained_column",
    "explained_output",
    "parse_manifest",
]

_PLATFORMS = {
    "onnxruntime": "onnxruntime_onnx",
    "text-embedding": "onnxruntime_onnx",
    "skops": "sklearn_skops",
    "python": "python",
    # a model served by another OIP server, known to a gateway only by its signature
    "remote": "remote",
    # one stage of a sharded model, as a node serves it (core/serving/stages.py)
    "stage": "onnxruntime_onnx",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_Strict):
    name: str = Field(min_length=1)
    datatype: str
    shape: tuple[int, ...]
    allow_nonfinite: bool = False
    feature_names: tuple[str, ...] | None = None
    labels: tuple[str, ...] | None = None
    #: one element's value, a valid one for the model: warm-up fills the tensor with it
    #: (core/serving/execution.py); a python model's BYTES input without one is not warmed
    example: str | float | bool | None = None

    @field_validator("datatype")
    @classmethod
    def _known_datatype(cls, value: str) -> str:
        if value not in DATATYPES:
            raise ValueError(f"unknown datatype '{value}'")
        return value

    @field_validator("shape")
    @classmethod
    def _dims(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(d < -1 or d == 0 for d in value):
            raise ValueError("dimensions must be positive or -1 (variable)")
        return value

    @model_validator(mode="after")
    def _example_fits(self) -> TensorSpec:
        if self.example is not None and (self.datatype == "BYTES") != isinstance(self.example, str):
            raise ValueError(f"example {self.example!r} is not a {self.datatype} value")
        return self


class BatchingPolicy(_Strict):
    max_batch_size: int = Field(default=32, ge=1, le=65536)
    max_queue_delay_us: int = Field(default=0, ge=0, le=10_000_000)
    max_queue_size: int = Field(default=1024, ge=1)


class EmbeddingSpec(_Strict):
    dimensions: int = Field(ge=1)
    allow_truncation: bool = False
    max_tokens: int = Field(default=512, ge=1)
    pooling: Literal["mean", "cls"] = "mean"
    normalize: bool = True


class RateLimitSpec(_Strict):
    requests_per_second: float = Field(gt=0)
    burst: int | None = Field(default=None, ge=1)


class PayloadLoggingSpec(_Strict):
    """The model allows its inputs and outputs to be logged (docs/privacy.md): stored only
    for tenants that opted in, for requests that did not withhold consent."""

    enabled: bool = False
    #: why the payloads are kept; recorded with each row
    purpose: str = Field(min_length=1, max_length=256)
    #: rows are deleted this many days after the inference
    retention_days: int = Field(ge=1, le=3650)


class FeedbackSpec(_Strict):
    """The model records its predictions so that ground truth can be attached later
    (``POST /v1/feedback``; docs/monitoring.md, "Feedback and concept drift")."""

    enabled: bool = False
    #: predictions and their feedback are deleted this many days after the inference
    retention_days: int = Field(default=30, ge=1, le=3650)
    #: the output holding the predicted class index; unset: the first integer output
    label_output: str | None = None
    #: the output holding class probabilities ([N, K]) or one score per row ([N]); unset:
    #: the first floating-point output
    score_output: str | None = None


class ProtectedAttribute(_Strict):
    """A protected attribute: one column (``feature``, named in the input's
    ``feature_names``) of one input, recorded with each prediction as its group."""

    name: str = Field(min_length=1, max_length=64)
    input: str = Field(min_length=1)
    feature: str = Field(min_length=1)


class FairnessGates(_Strict):
    """Limits on a version's between-group differences, checked before a canary of it is
    promoted (docs/fairness.md, "Fairness gates"); an unset limit is not checked. They are
    judged on the groups with ``min_group_size`` labelled rows; smaller groups are listed
    as too small to judge, and with ``require_all_groups`` hold the decision instead."""

    max_demographic_parity_difference: float | None = Field(default=None, ge=0, le=1)
    min_demographic_parity_ratio: float | None = Field(default=None, ge=0, le=1)
    max_equalized_odds_difference: float | None = Field(default=None, ge=0, le=1)
    max_equal_opportunity_difference: float | None = Field(default=None, ge=0, le=1)
    #: a group too small to judge holds the decision (default: it is reported, not judged)
    require_all_groups: bool = False

    @model_validator(mode="after")
    def _some_limit(self) -> FairnessGates:
        if (
            self.max_demographic_parity_difference is None
            and self.min_demographic_parity_ratio is None
            and self.max_equalized_odds_difference is None
            and self.max_equal_opportunity_difference is None
        ):
            raise ValueError("fairness.gates sets no limit")
        return self


class FairnessSpec(_Strict):
    """Fairness audits of the model's labelled predictions (docs/fairness.md): each
    attribute's value is recorded with the prediction, and groups with fewer than
    ``min_group_size`` labelled rows are reported as too small to judge."""

    protected: tuple[ProtectedAttribute, ...] = Field(min_length=1, max_length=8)
    min_group_size: int = Field(default=30, ge=1, le=1_000_000)
    #: limits a canary must keep to be promoted; unset: fairness does not gate rollouts
    gates: FairnessGates | None = None


class AnomalySpec(_Strict):
    """Inputs are scored against the version's reference profile before they run
    (docs/monitoring.md, "Anomalous inputs"): a request whose score is above ``threshold``
    is answered and marked (``flag``) or refused with INVALID_ARGUMENT (``reject``)."""

    action: Literal["flag", "reject"] = "flag"
    #: scores are in [0, 1]; above 0.5 means outside the range seen in the reference
    threshold: float = Field(default=0.5, ge=0.0, lt=1.0)


class CacheSpec(_Strict):
    """The model's answers are deterministic and may be kept (docs/caching.md): the same
    inputs to the same version give the same outputs, so they are served from the result
    cache for ``ttl_seconds``."""

    ttl_seconds: float = Field(default=300.0, gt=0, le=30 * 86400)
    #: one entry for every tenant (the answer does not depend on who asks); else per tenant
    shareable: bool = False
    #: past its ttl, an entry may still answer this long while the model cannot
    stale_seconds: float = Field(default=0.0, ge=0, le=30 * 86400)


class StageSpec(_Strict):
    """One stage of a sharded model (``modelgate shard``; docs/model-repository.md): an
    ONNX sub-graph that a node loads on its own, fed by the model's inputs and earlier
    stages' outputs, named in ``inputs``."""

    #: the stage's ONNX file, relative to the version folder, in a folder of its own
    artifact: str
    inputs: tuple[TensorSpec, ...] = Field(min_length=1)
    outputs: tuple[TensorSpec, ...] = Field(min_length=1)
    #: bytes of the stage's folder on disk: what it takes of a node's memory budget
    size_bytes: int = Field(ge=0)

    @field_validator("artifact")
    @classmethod
    def _relative(cls, value: str) -> str:
        try:
            check_relative(value)
        except ModelgateError as exc:
            raise ValueError(exc.message) from None
        if "/" not in value:
            raise ValueError("a stage's artifact lies in a folder of its own (stage-1/model.onnx)")
        return value


class HardwareSpec(_Strict):
    prefer: Literal["cpu", "gpu"] = "cpu"


#: what :class:`RequestLimits` holds when a manifest says nothing (docs/model-repository.md)
DEFAULT_MAX_ROWS = 4096
DEFAULT_MAX_TEXTS = 256
DEFAULT_MAX_TEXT_BYTES = 8192
DEFAULT_MAX_TOTAL_TOKENS = 32_768


class RequestLimits(_Strict):
    """The most work one request may ask of the model, refused (PAYLOAD_TOO_LARGE) before
    anything runs. Unset fields take defaults when the manifest is built, so a loaded
    manifest's ``limits`` always holds numbers (the token limits only for embedding models).
    """

    #: rows (the first dimension) per request; default 4096, or the batch size if larger
    max_rows: int | None = Field(default=None, ge=1, le=1 << 24)
    #: texts (BYTES elements, all inputs together) per request; default 256
    max_texts: int | None = Field(default=None, ge=1, le=1 << 24)
    #: UTF-8 bytes of any one text; default 8 KiB. Checked before tokenization
    max_text_bytes: int | None = Field(default=None, ge=1, le=1 << 30)
    #: tokens of any one text (embedding models); default the model's ``embedding.max_tokens``
    max_tokens_per_text: int | None = Field(default=None, ge=1)
    #: tokens of all the request's texts together (embedding models); default 32768
    max_total_tokens: int | None = Field(default=None, ge=1)
    #: texts over ``max_tokens_per_text`` are cut to it, as sentence-transformers does (and
    #: they still count at it against ``max_total_tokens``); false: refused, as OpenAI does.
    #: Unset: cut on OIP, refused on ``/v1/embeddings`` unless the request asks to truncate
    truncate: bool | None = None

    def resolved(self, manifest: ModelManifest) -> RequestLimits:
        """These limits with every unset one at its default for ``manifest``."""
        embedding = manifest.embedding
        rows = self.max_rows
        if rows is None:
            batch = manifest.batching.max_batch_size if manifest.batching is not None else 0
            rows = max(DEFAULT_MAX_ROWS, batch)
        per_text = self.max_tokens_per_text
        total = self.max_total_tokens
        if embedding is None:
            if per_text is not None or total is not None:
                raise ValueError("token limits need an 'embedding' section (its tokenizer)")
        else:
            if per_text is None:
                per_text = embedding.max_tokens
            elif per_text > embedding.max_tokens:
                raise ValueError(
                    f"limits.max_tokens_per_text ({per_text}) is over the model's "
                    f"embedding.max_tokens ({embedding.max_tokens})"
                )
            total = DEFAULT_MAX_TOTAL_TOKENS if total is None else total
        return RequestLimits(
            max_rows=rows,
            max_texts=DEFAULT_MAX_TEXTS if self.max_texts is None else self.max_texts,
            max_text_bytes=(
                DEFAULT_MAX_TEXT_BYTES if self.max_text_bytes is None else self.max_text_bytes
            ),
            max_tokens_per_text=per_text,
            max_total_tokens=total,
            truncate=self.truncate,
        )


class ModelManifest(_Strict):
    """One version's effective manifest: ``model.yaml`` merged with its ``version.yaml``."""

    name: str
    runtime: Literal["onnxruntime", "text-embedding", "skops", "python", "remote", "stage"]
    platform: str = ""
    default_version: int | None = None
    version_policy: Any = "all"
    preload: bool = False
    #: how the registry keeps the model loaded: "always" (loaded at start, never evicted;
    #: what ``preload: true`` means), "predictive" (loaded ahead of the traffic its usage
    #: history expects), "on-demand" (loaded by its first request); unset: "always" with
    #: ``preload: true``, else "on-demand". Evictions under the memory budget take the
    #: models least likely needed soon first (docs/model-repository.md)
    warm: Literal["always", "predictive", "on-demand"] | None = None
    artifact: str = "model.onnx"
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    batching: BatchingPolicy | None = None
    execution: Literal["auto", "inline", "thread"] = "auto"
    instances: int = Field(default=1, ge=1, le=64)
    hardware: HardwareSpec = HardwareSpec()
    runtime_options: dict[str, Any] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    #: tenant ids that may see this model; unset: every tenant
    tenants: tuple[str, ...] | None = None
    #: a limit for the model whoever calls it (every tenant together)
    rate_limit: RateLimitSpec | None = None
    #: the most work one request may ask (rows, texts, bytes, tokens); defaults when unset
    limits: RequestLimits = RequestLimits()
    card: dict[str, Any] = Field(default_factory=dict)
    embedding: EmbeddingSpec | None = None
    #: payload logging allowed by this model; unset: never logged
    payload_logging: PayloadLoggingSpec | None = None
    #: inputs scored against the reference profile; unset: not checked
    anomaly: AnomalySpec | None = None
    #: predictions recorded for feedback (ground truth); unset: not recorded
    feedback: FeedbackSpec | None = None
    #: protected attributes audited for fairness; unset: those the card's
    #: ``protected_attributes`` name among the inputs' feature names (docs/fairness.md)
    fairness: FairnessSpec | None = None
    #: answers kept in the result cache; unset: never cached
    cache: CacheSpec | None = None
    #: attributions on request (``parameters.explain``); unset: refused
    explain: ExplainSpec | None = None
    #: models that answer, in order, when this one cannot (unavailable, overloaded, timed
    #: out, failed, or every node's breaker open); they must take the same inputs
    fallbacks: tuple[str, ...] = ()
    #: retrained from its feedback by the learning loop; unset: never (docs/learning.md)
    learning: LearningSpec | None = None
    #: a sharded model's consecutive stages, each on whichever nodes hold it; empty: whole
    stages: tuple[StageSpec, ...] = ()

    @field_validator("artifact")
    @classmethod
    def _relative_artifact(cls, value: str) -> str:
        try:
            return check_relative(value)
        except ModelgateError as exc:  # pydantic reports a ValueError with the field's name
            raise ValueError(exc.message) from None

    @model_validator(mode="after")
    def _consistent(self) -> ModelManifest:
        if not self.inputs or not self.outputs:
            raise ValueError("a model needs at least one input and one output")
        for group in (self.inputs, self.outputs):
            names = [t.name for t in group]
            if len(set(names)) != len(names):
                raise ValueError(f"duplicate tensor names in {names}")
        if self.batching is not None:
            for spec in (*self.inputs, *self.outputs):
                if not spec.shape or spec.shape[0] != -1:
                    raise ValueError(
                        f"batching needs a variable first dimension, '{spec.name}' has "
                        f"{list(spec.shape)}"
                    )
        if self.feedback is not None:
            outputs = {t.name for t in self.outputs}
            for named in (self.feedback.label_output, self.feedback.score_output):
                if named is not None and named not in outputs:
                    raise ValueError(f"feedback names output '{named}', which the model lacks")
        if self.fairness is not None:
            _check_fairness(self, self.fairness)
        if self.explain is not None:
            check_explain(self, self.explain)
        if self.learning is not None:
            _check_learning(self, self.learning)
        if self.name in self.fallbacks or len(set(self.fallbacks)) != len(self.fallbacks):
            raise ValueError("fallbacks must be other models, each named once")
        if self.stages:
            _check_stages(self)
        if self.warm is None:
            object.__setattr__(self, "warm", "always" if self.preload else "on-demand")
        elif self.preload and self.warm != "always":
            raise ValueError(f"preload: true means warm: always, not warm: {self.warm}")
        object.__setattr__(self, "preload", self.warm == "always")
        object.__setattr__(self, "limits", self.limits.resolved(self))
        if not self.platform:
            object.__setattr__(self, "platform", _PLATFORMS[self.runtime])
        return self

    def input(self, name: str) -> TensorSpec | None:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        return None

    def output(self, name: str) -> TensorSpec | None:
        for spec in self.outputs:
            if spec.name == name:
                return spec
        return None

    @property
    def protected_attributes(self) -> tuple[ProtectedAttribute, ...]:
        """The attributes fairness audits group by: the ``fairness`` section's, else each
        name of the card's ``protected_attributes`` that is a feature of one input."""
        if self.fairness is not None:
            return self.fairness.protected
        named = self.card.get("protected_attributes")
        if not isinstance(named, list):
            return ()
        found: list[ProtectedAttribute] = []
        for name in named:
            for spec in self.inputs:
                if isinstance(name, str) and name in (spec.feature_names or ()):
                    found.append(ProtectedAttribute(name=name, input=spec.name, feature=name))
                    break
        return tuple(found)

    @property
    def token_output(self) -> str | None:
        """The output counting each row's tokens (an embedding model's second output, as
        the ``text-embedding`` runtime answers it), or None: the model counts no tokens."""
        if self.embedding is None or len(self.outputs) < 2:
            return None
        return self.outputs[1].name


def _check_fairness(manifest: ModelManifest, spec: FairnessSpec) -> None:
    names = [p.name for p in spec.protected]
    if len(set(names)) != len(names):
        raise ValueError(f"fairness: duplicate attribute names in {names}")
    for attribute in spec.protected:
        tensor = manifest.input(attribute.input)
        if tensor is None:
            raise ValueError(f"fairness names input '{attribute.input}', which the model lacks")
        if attribute.feature not in (tensor.feature_names or ()):
            raise ValueError(
                f"fairness names feature '{attribute.feature}', which input "
                f"'{attribute.input}' does not list in its feature_names"
            )


def _check_learning(manifest: ModelManifest, spec: LearningSpec) -> None:
    if manifest.feedback is None or not manifest.feedback.enabled:
        raise ValueError("learning needs feedback enabled (its labels are the data set)")
    if manifest.payload_logging is None or not manifest.payload_logging.enabled:
        raise ValueError("learning needs payload_logging enabled (its inputs are the data set)")
    known = {t.name for t in manifest.inputs}
    for tensor in manifest.inputs:
        known.update(tensor.feature_names or ())
    unknown = sorted(set(spec.columns) - known)
    if unknown:
        raise ValueError(f"learning.columns names {unknown}, neither inputs nor features")


def _check_stages(manifest: ModelManifest) -> None:
    """Stages run in order: each one's inputs are the model's inputs or earlier stages'
    outputs, the last one answers every output of the model, and at least two of them."""
    if len(manifest.stages) < 2:
        raise ValueError("a sharded model has at least two stages")
    if manifest.runtime not in ("onnxruntime", "text-embedding"):
        raise ValueError(
            f"runtime '{manifest.runtime}' cannot be sharded (onnxruntime, text-embedding)"
        )
    known = {t.name for t in manifest.inputs}
    files: set[str] = set()
    for number, stage in enumerate(manifest.stages, 1):
        missing = [t.name for t in stage.inputs if t.name not in known]
        if missing:
            raise ValueError(
                f"stage {number} needs {missing}, which neither the model's inputs nor an "
                "earlier stage's outputs provide"
            )
        folder = stage.artifact.split("/", 1)[0]
        if folder in files:
            raise ValueError(f"stages {number} and an earlier one share the folder '{folder}'")
        files.add(folder)
        known.update(t.name for t in stage.outputs)
    last = {t.name for t in manifest.stages[-1].outputs}
    absent = [t.name for t in manifest.outputs if t.name not in last]
    if absent:
        raise ValueError(f"the last stage does not answer the model's outputs {absent}")


def parse_manifest(name: str, data: dict[str, Any]) -> ModelManifest:
    """Build a manifest from plain data; INVALID_ARGUMENT naming each problem otherwise."""
    try:
        return ModelManifest.model_validate({"name": name, **data})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'manifest'}: {e['msg']}" for e in exc.errors()
        )
        raise invalid(f"invalid manifest for model '{name}': {problems}") from None


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge a version's overrides onto the model's manifest: mappings merge, rest replaces."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out
