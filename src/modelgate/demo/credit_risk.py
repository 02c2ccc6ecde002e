"""The `credit-risk` demo model: a tabular default classifier on synthetic applicants.

Two versions of the same signature let the server show versioning, default versions and
canaries: version 1 is a scaled logistic regression, version 2 gradient-boosted trees. Both are
exported to ONNX with one FP32 input `features` [N, 12] and outputs `label` (INT64 [N]) and
`probabilities` (FP32 [N, 2]).

The data is synthetic and generated from a fixed seed so the build is reproducible and no data
set has to be downloaded. `age_band` is a protected attribute with a small, deliberate effect on
the default rate, so fairness checks built later have a real disparity to find.

Only numpy is imported at module level: the data generator is also used by the serving
environment's fast unit tests, which have no skl2onnx or onnx and need not pay for scikit-learn.

One build recipe over 400 lines: the data, the two models, their export and the checks
against scikit-learn are one sequence read top to bottom, and split they would only pass
arrays to each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from modelgate.core.serving import profiles as reference
from modelgate.demo.manifest import write_json, write_yaml

if TYPE_CHECKING:
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.pipeline import Pipeline

MODEL_NAME = "credit-risk"
FEATURE_NAMES: tuple[str, ...] = (
    "age_band",
    "annual_income",
    "debt_to_income",
    "credit_utilization",
    "months_employed",
    "open_accounts",
    "delinquencies_2y",
    "loan_amount",
    "loan_term_months",
    "credit_history_years",
    "inquiries_6m",
    "home_ownership",
)
PROTECTED_ATTRIBUTES: tuple[str, ...] = ("age_band",)
CATEGORICAL_FEATURES: tuple[str, ...] = ("age_band", "home_ownership")
CLASS_NAMES: tuple[str, ...] = ("repaid", "default")
INPUT_NAME = "features"
LABEL_OUTPUT = "label"
PROBABILITIES_OUTPUT = "probabilities"

SEED = 20240601
N_ROWS = 20_000
VALIDATION_FRACTION = 0.2
ONNX_OPSETS = {"": 17, "ai.onnx.ml": 3}
MAX_ONNX_DIFFERENCE = 1e-4

AGE_BAND_SHARES = (0.12, 0.22, 0.22, 0.18, 0.14, 0.12)  # 18-24, 25-34, ..., 65+
LOAN_TERMS = (12, 24, 36, 48, 60, 72)


@dataclass(frozen=True)
class Dataset:
    """Applicant features (FP32, columns in FEATURE_NAMES order) and default labels (0/1)."""

    features: NDArray[np.float32]
    labels: NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class TrainedVersion:
    """One model version: the fitted estimator, its ONNX export and validation metrics."""

    version: int
    algorithm: str
    estimator: Any  # a fitted scikit-learn classifier
    onnx_model: bytes
    metrics: dict[str, float]


def generate(n_rows: int = N_ROWS, seed: int = SEED) -> Dataset:
    """Draw synthetic applicants whose default odds follow a plausible logistic risk model.

    Features are correlated the way a reader would expect (income and tenure grow with age, loan
    size with income) and the label adds an interaction and latent noise, so trees can beat the
    linear model and neither is perfect.
    """
    rng = np.random.default_rng(seed)
    age_band = rng.choice(len(AGE_BAND_SHARES), size=n_rows, p=AGE_BAND_SHARES)
    log_income = np.log(42_000.0) + 0.12 * np.minimum(age_band, 4) + rng.normal(0.0, 0.45, n_rows)
    annual_income = np.clip(np.exp(log_income), 8_000.0, 600_000.0)
    debt_to_income = np.clip(rng.beta(2.0, 5.0, n_rows) * 0.9, 0.0, 0.9)
    credit_utilization = rng.beta(2.0, 3.0, n_rows)
    months_employed = np.clip(
        rng.gamma(2.0, 12.0 + 14.0 * age_band, n_rows), 0.0, 12.0 * (8.0 + 10.0 * age_band)
    ).round()
    open_accounts = rng.poisson(3.0 + 0.8 * age_band, n_rows)
    delinquencies_2y = rng.poisson(0.25 + 0.6 * credit_utilization**2, n_rows)
    loan_amount = np.clip(
        annual_income * rng.lognormal(np.log(0.25), 0.5, n_rows), 1_000.0, 150_000.0
    ).round(-2)
    loan_term_months = rng.choice(LOAN_TERMS, size=n_rows, p=(0.08, 0.12, 0.35, 0.15, 0.25, 0.05))
    credit_history_years = np.clip(
        rng.gamma(2.0, 1.5 + 2.5 * age_band, n_rows), 0.0, 4.0 + 9.0 * age_band
    ).round(1)
    inquiries_6m = rng.poisson(1.0 + 0.8 * credit_utilization, n_rows)
    ownership_odds = np.stack(
        [np.full(n_rows, 3.0 - 0.4 * age_band), 0.5 + 0.6 * age_band, 0.2 + 0.5 * age_band], axis=1
    )
    ownership_cumulative = np.cumsum(ownership_odds / ownership_odds.sum(axis=1, keepdims=True), 1)
    home_ownership = (rng.random((n_rows, 1)) > ownership_cumulative[:, :-1]).sum(axis=1)

    loan_to_income = loan_amount / annual_income
    logit = (
        -1.9
        + 2.0 * (debt_to_income - 0.26)
        + 8.0 * np.maximum(debt_to_income - 0.4, 0.0)
        + 1.6 * (credit_utilization - 0.4)
        + 0.45 * np.minimum(delinquencies_2y, 3)
        + 0.15 * inquiries_6m
        - 0.6 * np.log(annual_income / 45_000.0)
        + 3.0 * np.maximum(loan_to_income - 0.35, 0.0)
        + 0.012 * (loan_term_months - 36)
        - 0.6 * (1.0 - np.exp(-credit_history_years / 4.0))
        - 0.004 * np.minimum(months_employed, 120)
        - 0.25 * (home_ownership == 2)
        + 1.5 * ((credit_utilization > 0.7) & (delinquencies_2y > 0))
        + 0.30 * (age_band == 0)
        - 0.05 * age_band
        + rng.normal(0.0, 0.5, n_rows)
    )
    labels = (rng.random(n_rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)

    columns = (
        age_band,
        annual_income.round(-1),
        debt_to_income.round(4),
        credit_utilization.round(4),
        months_employed,
        open_accounts,
        delinquencies_2y,
        loan_amount,
        loan_term_months,
        credit_history_years,
        inquiries_6m,
        home_ownership,
    )
    features = np.stack([np.asarray(c, dtype=np.float64) for c in columns], axis=1)
    return Dataset(features=features.astype(np.float32), labels=labels)


def split(
    dataset: Dataset, validation_fraction: float = VALIDATION_FRACTION, seed: int = SEED
) -> tuple[Dataset, Dataset]:
    """Shuffle with `seed` and split into (train, validation)."""
    order = np.random.default_rng(seed + 1).permutation(len(dataset))
    n_validation = round(len(dataset) * validation_fraction)
    validation, train = order[:n_validation], order[n_validation:]
    return (
        Dataset(dataset.features[train], dataset.labels[train]),
        Dataset(dataset.features[validation], dataset.labels[validation]),
    )


def train_logistic(train: Dataset, seed: int = SEED) -> Pipeline:
    """Version 1: standardised logistic regression, the interpretable baseline."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    pipeline = Pipeline(
        [
            ("scale", StandardScaler()),
            ("classify", LogisticRegression(max_iter=1_000, random_state=seed)),
        ]
    )
    pipeline.fit(train.features, train.labels)
    return pipeline


def train_boosting(train: Dataset, seed: int = SEED) -> GradientBoostingClassifier:
    """Version 2: gradient-boosted trees, small enough that one ONNX call stays well under 1 ms."""
    from sklearn.ensemble import GradientBoostingClassifier

    model = GradientBoostingClassifier(
        n_estimators=100, max_depth=3, learning_rate=0.1, random_state=seed
    )
    model.fit(train.features, train.labels)
    return model


def evaluate(estimator: Any, validation: Dataset) -> dict[str, float]:
    """Accuracy, ROC AUC, log loss, Brier score and calibration error of P(default) on
    the validation split."""
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

    from modelgate.core.monitoring.classification_metrics import (
        brier_score,
        expected_calibration_error,
    )

    probabilities = estimator.predict_proba(validation.features)[:, 1]
    return {
        "accuracy": float(accuracy_score(validation.labels, probabilities >= 0.5)),
        "auc": float(roc_auc_score(validation.labels, probabilities)),
        "log_loss": float(log_loss(validation.labels, probabilities)),
        # as modelgate's concept-drift report computes them on live feedback
        "brier": brier_score(probabilities, validation.labels),
        "ece": expected_calibration_error(probabilities, validation.labels),
    }


def export_onnx(estimator: Any) -> bytes:
    """Convert to ONNX with one `features` input and outputs renamed to `label`/`probabilities`.

    skl2onnx names its outputs `output_label`/`output_probability`; the manifest's names are the
    API, so the graph is renamed rather than the manifest bent to the converter.
    """
    import onnx
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    model = convert_sklearn(
        estimator,
        initial_types=[(INPUT_NAME, FloatTensorType([None, len(FEATURE_NAMES)]))],
        options={"zipmap": False},
        target_opset=ONNX_OPSETS,
    )
    outputs = [output.name for output in model.graph.output]
    if len(outputs) != 2:
        raise RuntimeError(f"expected two ONNX outputs (label, probabilities), got {outputs}")
    renames = dict(zip(outputs, (LABEL_OUTPUT, PROBABILITIES_OUTPUT), strict=True))
    for node in model.graph.node:
        node.output[:] = [renames.get(name, name) for name in node.output]
        node.input[:] = [renames.get(name, name) for name in node.input]
    for output in model.graph.output:
        output.name = renames[output.name]
    _deduplicate_opsets(model)
    # skl2onnx names the graph with a random UUID; a fixed name keeps builds byte-identical.
    model.graph.name = MODEL_NAME
    model.doc_string = f"modelgate demo model {MODEL_NAME}"
    onnx.checker.check_model(model, full_check=True)
    serialized: bytes = model.SerializeToString()
    return serialized


def _deduplicate_opsets(model: Any) -> None:
    """Keep one opset import per domain (the highest); skl2onnx can list the default one twice."""
    versions: dict[str, int] = {}
    for opset in model.opset_import:
        versions[opset.domain] = max(versions.get(opset.domain, 0), opset.version)
    del model.opset_import[:]
    for domain, version in versions.items():
        entry = model.opset_import.add()
        entry.domain, entry.version = domain, version


def verify_onnx(onnx_model: bytes, estimator: Any, features: NDArray[np.float32]) -> float:
    """Check the ONNX graph reproduces scikit-learn; return the largest probability difference.

    Raises RuntimeError when outputs differ, so a bad conversion fails the build instead of
    shipping a model whose answers quietly disagree with the one that was evaluated.
    """
    import onnxruntime

    session = onnxruntime.InferenceSession(onnx_model, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    if names != [LABEL_OUTPUT, PROBABILITIES_OUTPUT]:
        raise RuntimeError(f"ONNX outputs are {names}, expected [label, probabilities]")
    labels, probabilities = session.run(names, {INPUT_NAME: features})
    expected = estimator.predict_proba(features)
    difference = float(np.max(np.abs(np.asarray(probabilities, dtype=np.float64) - expected)))
    if labels.dtype != np.int64 or probabilities.dtype != np.float32:
        raise RuntimeError(f"ONNX output types are {labels.dtype}, {probabilities.dtype}")
    if difference >= MAX_ONNX_DIFFERENCE:
        raise RuntimeError(f"ONNX probabilities differ from scikit-learn by {difference:.2e}")
    return difference


def manifest() -> dict[str, Any]:
    """The model-level `model.yaml` shared by both versions."""
    return {
        "runtime": "onnxruntime",
        "platform": "onnxruntime_onnx",
        "default_version": 2,
        "preload": True,
        "inputs": [
            {
                "name": INPUT_NAME,
                "datatype": "FP32",
                "shape": [-1, len(FEATURE_NAMES)],
                "allow_nonfinite": False,
                "feature_names": list(FEATURE_NAMES),
            }
        ],
        "outputs": [
            {"name": LABEL_OUTPUT, "datatype": "INT64", "shape": [-1]},
            {
                "name": PROBABILITIES_OUTPUT,
                "datatype": "FP32",
                "shape": [-1, len(CLASS_NAMES)],
                "labels": list(CLASS_NAMES),
            },
        ],
        "batching": {"max_batch_size": 64, "max_queue_delay_us": 0, "max_queue_size": 2048},
        "execution": "auto",
        "hardware": {"prefer": "cpu"},
        "runtime_options": {"intra_op_threads": 1, "inter_op_threads": 1},
        # inputs outside the training data's range are answered and marked
        "anomaly": {"action": "flag", "threshold": 0.5},
        # predictions are recorded so that ground truth can be sent back (POST /v1/feedback)
        "feedback": {"enabled": True, "retention_days": 30},
        # the model allows its inputs to be kept, for retraining; nothing is kept unless the
        # server has payload keys, the tenant opts in and the request does not withhold
        # consent (docs/privacy.md)
        "payload_logging": {"enabled": True, "purpose": "retraining", "retention_days": 30},
        # `modelgate learn credit-risk` retrains it from consented, labelled traffic
        # (docs/learning.md); no trigger: runs start by hand
        "learning": {
            "trainer": "modelgate.learning.trainers.credit_risk:train",
            "options": {"algorithm": "logistic"},
            "min_rows": 200,
            "columns": {name: "sensitive" for name in PROTECTED_ATTRIBUTES},
            "gates": {"auc_drop_max": 0.01, "accuracy_drop_max": 0.02},
            "rollout": {"steps": [50, 100], "step_seconds": 60, "min_requests": 20},
        },
        # each prediction records its age band, so fairness audits can group by it
        "fairness": {
            "protected": [
                {"name": name, "input": INPUT_NAME, "feature": name}
                for name in PROTECTED_ATTRIBUTES
            ],
            "min_group_size": 30,
        },
        # parameters.explain answers the log-odds of default, feature by feature; each
        # version.yaml names its method (docs/explanations.md)
        "explain": {"output": PROBABILITIES_OUTPUT, "target": CLASS_NAMES[1], "link": "logit"},
        "labels": {"team": "risk", "domain": "lending", "data": "synthetic"},
        "card": {
            "description": (
                "Predicts the probability that a loan applicant defaults, from 12 numeric "
                "application features."
            ),
            "intended_use": (
                "Demonstration of serving, batching, versioning and monitoring a tabular "
                "classifier. Not for real lending decisions."
            ),
            "limitations": (
                f"Trained on {N_ROWS} synthetic applicants drawn from a hand-written risk model "
                f"(seed {SEED}); it says nothing about real borrowers. age_band is a protected "
                "attribute and is used as a feature: the synthetic data gives it a small effect on "
                "default (the youngest band defaults more), so predictions differ by age band and "
                "fairness checks should flag it."
            ),
            "license": "Apache-2.0",
            "protected_attributes": list(PROTECTED_ATTRIBUTES),
        },
    }


#: each version's explanation method: the logistic regression is linear in log-odds, so its
#: attributions are exact; the boosted trees are explained by KernelSHAP
EXPLAIN_METHODS = {1: "linear", 2: "kernel_shap"}


def version_manifest(trained: TrainedVersion) -> dict[str, Any]:
    """The per-version `version.yaml`: its explanation method, and the card, which names
    the algorithm and metrics."""
    return {
        "explain": {"method": EXPLAIN_METHODS[trained.version]},
        "card": {
            "algorithm": trained.algorithm,
            "validation_metrics": {k: round(v, 6) for k, v in trained.metrics.items()},
        },
    }


def reference_statistics(
    trained: TrainedVersion, train: Dataset, validation: Dataset, seed: int
) -> dict[str, Any]:
    """The per-version `reference.json`: training inputs and this version's outputs on them."""
    probabilities = trained.estimator.predict_proba(train.features)
    predicted = np.argmax(probabilities, axis=1)
    return {
        "model": MODEL_NAME,
        "version": trained.version,
        "source": "training split",
        "seed": seed,
        "n_train": len(train),
        "n_validation": len(validation),
        "features": reference.feature_statistics(
            train.features, FEATURE_NAMES, categorical=CATEGORICAL_FEATURES
        ),
        "outputs": {
            PROBABILITIES_OUTPUT: {
                "class": CLASS_NAMES[1],
                **reference.probability_statistics(probabilities[:, 1]),
            },
            LABEL_OUTPUT: reference.label_frequencies(predicted, CLASS_NAMES),
        },
        "target": reference.label_frequencies(train.labels, CLASS_NAMES),
        "validation_metrics": trained.metrics,
    }


def train_versions(train: Dataset, validation: Dataset, seed: int) -> list[TrainedVersion]:
    """Fit, export and verify both versions."""
    candidates: list[tuple[int, str, Any]] = [
        (1, "StandardScaler + LogisticRegression", train_logistic(train, seed)),
        (2, "GradientBoostingClassifier (100 trees, depth 3)", train_boosting(train, seed)),
    ]
    versions = []
    for number, algorithm, estimator in candidates:
        onnx_model = export_onnx(estimator)
        verify_onnx(onnx_model, estimator, validation.features)
        versions.append(
            TrainedVersion(
                number, algorithm, estimator, onnx_model, evaluate(estimator, validation)
            )
        )
    return versions


def build(model_dir: Path, seed: int = SEED) -> list[TrainedVersion]:
    """Write the whole `credit-risk` model folder into `model_dir` (which must exist)."""
    train, validation = split(generate(N_ROWS, seed), VALIDATION_FRACTION, seed)
    versions = train_versions(train, validation, seed)
    write_yaml(model_dir / "model.yaml", manifest(), header=_HEADER)
    for trained in versions:
        version_dir = model_dir / str(trained.version)
        version_dir.mkdir()
        (version_dir / "model.onnx").write_bytes(trained.onnx_model)
        write_yaml(version_dir / "version.yaml", version_manifest(trained), header=_HEADER)
        write_json(
            version_dir / "reference.json",
            reference_statistics(trained, train, validation, seed),
        )
    return versions


_HEADER = "Generated by `python -m modelgate.demo build`; edits are overwritten."
