"""Attributions without a server (core/serving/attribution.py, explaining/kernel_shap.py):
the linear method is w * (x - mean) for a logistic model and refuses a model that is not
linear; KernelSHAP adds up to the model's log-odds; the background follows the reference
profile; the manifest's ``explain`` section is checked when it is parsed."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from modelgate.core.serving.attribution import (
    ADDITIVITY_TOLERANCE,
    apply_link,
    linear_attributions,
    reference_background,
    reference_means,
)
from modelgate.core.serving.manifest import parse_manifest
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.explaining.kernel_shap import ShapKernelAttributor

WEIGHTS = np.array([0.8, -1.5, 0.3, 2.0])
BIAS = -0.7
MEANS = np.array([1.0, 0.5, -2.0, 0.1])


def logistic(rows: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    return np.clip(1 / (1 + np.exp(-(rows @ WEIGHTS + BIAS))), 1e-7, 1 - 1e-7)


def interacting(rows: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Log-odds with a product of two features: no sum of per-feature parts."""
    logits = rows @ WEIGHTS + BIAS + rows[:, 0] * rows[:, 1]
    return np.clip(1 / (1 + np.exp(-logits)), 1e-7, 1 - 1e-7)


ROWS = np.array([[2.0, 0.0, -1.0, 0.5], [0.0, 1.5, -3.0, -0.2], list(MEANS)])


def test_linear_attributions_are_the_weights_times_the_distance_from_the_means() -> None:
    calls: list[int] = []

    def counted(rows: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        calls.append(len(rows))
        return logistic(rows)

    explained = linear_attributions(counted, ROWS, MEANS, "logit")
    np.testing.assert_allclose(explained.values, WEIGHTS * (ROWS - MEANS), atol=1e-9)
    assert explained.base_value == pytest.approx(MEANS @ WEIGHTS + BIAS)
    assert calls == [1 + len(ROWS) * 4 + len(ROWS)]  # one call: every probe at once
    np.testing.assert_allclose(explained.outputs, ROWS @ WEIGHTS + BIAS, atol=1e-9)


def test_a_model_whose_features_interact_is_refused_by_the_linear_method() -> None:
    with pytest.raises(ModelgateError) as caught:
        linear_attributions(interacting, ROWS, MEANS, "logit")
    assert caught.value.kind is ErrorKind.FAILED_PRECONDITION
    assert "kernel_shap" in caught.value.message


def test_kernel_shap_adds_up_to_the_log_odds_of_a_nonlinear_model() -> None:
    background = np.random.default_rng(1).normal(size=(16, 4))
    values, base, evaluations = ShapKernelAttributor().attribute(
        interacting, ROWS, background, "logit", 64
    )
    assert values.shape == ROWS.shape
    gaps = base + values.sum(axis=1) - apply_link("logit", interacting(ROWS))
    assert np.abs(gaps).max() <= ADDITIVITY_TOLERANCE
    assert base == pytest.approx(
        apply_link("logit", interacting(background).mean(keepdims=True))[0]
    )
    # every coalition of 4 features (14) for each row, over the whole background, batched
    assert evaluations >= len(ROWS) * 14 * len(background)


PROFILE = {
    "features": {
        "band": {
            "mean": 1.2,
            "quantiles": {"levels": [0, 0.5, 1], "values": [0, 1, 3]},
            "categories": {"values": [0, 1, 3], "frequencies": [0.25, 0.5, 0.25]},
        },
        "income": {
            "mean": 50.0,
            "quantiles": {"levels": [0, 0.5, 1], "values": [10.0, 40.0, 200.0]},
        },
    }
}


def test_the_background_follows_the_reference_profile() -> None:
    background = reference_background(PROFILE, ["band", "income"], 400, seed=3)
    bands, counts = np.unique(background[:, 0], return_counts=True)
    assert list(bands) == [0, 1, 3]
    assert list(counts) == [100, 200, 100]  # the frequencies, stratum by stratum
    assert background[:, 1].min() >= 10 and background[:, 1].max() <= 200
    assert np.median(background[:, 1]) == pytest.approx(40.0, abs=1.0)
    again = reference_background(PROFILE, ["band", "income"], 400, seed=3)
    np.testing.assert_array_equal(background, again)
    assert list(reference_means(PROFILE, ["income", "band"])) == [50.0, 1.2]


def test_a_feature_the_profile_lacks_is_a_failed_precondition() -> None:
    for profile in (None, {"features": {}}):
        with pytest.raises(ModelgateError) as caught:
            reference_background(profile, ["band"], 8)
        assert caught.value.kind is ErrorKind.FAILED_PRECONDITION


TABULAR = {
    "runtime": "onnxruntime",
    "inputs": [
        {"name": "x", "datatype": "FP32", "shape": [-1, 3], "feature_names": ["a", "b", "c"]}
    ],
    "outputs": [
        {"name": "label", "datatype": "INT64", "shape": [-1]},
        {"name": "p", "datatype": "FP32", "shape": [-1, 2], "labels": ["no", "yes"]},
    ],
}


def test_an_explain_section_names_a_floating_point_output_and_a_column_of_it() -> None:
    manifest = parse_manifest("m", {**TABULAR, "explain": {"link": "logit"}})
    assert manifest.explain is not None and manifest.explain.method == "kernel_shap"
    for bad, words in (
        ({"output": "label"}, "floating-point output"),
        ({"output": "p", "target": "maybe"}, "not one of the labels"),
        ({"output": "p", "target": 2}, "not a column"),
        ({"method": "guess"}, "method"),
        ({"link": "probit"}, "link"),
    ):
        with pytest.raises(ModelgateError) as caught:
            parse_manifest("m", {**TABULAR, "explain": bad})
        assert words in caught.value.message, caught.value.message


def test_explain_needs_one_numeric_table_input() -> None:
    text = {
        "runtime": "python",
        "inputs": [{"name": "t", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": "s", "datatype": "FP32", "shape": [-1]}],
        "explain": {},
    }
    with pytest.raises(ModelgateError) as caught:
        parse_manifest("m", text)
    assert "shape [-1, features]" in caught.value.message


def test_settings_bound_the_model_rows_of_one_explained_row() -> None:
    from pydantic import ValidationError

    from modelgate.settings import EXPLAIN_MAX_MODEL_ROWS, Settings

    assert Settings().explain_samples * Settings().explain_background_rows <= EXPLAIN_MAX_MODEL_ROWS
    with pytest.raises(ValidationError, match="model rows per explained row"):
        Settings(explain_samples=65536, explain_background_rows=1024)
