"""What a trainer may see: exported rows turned into the trainer's data and a report."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from modelgate.core.serving.manifest import parse_manifest
from modelgate.learning.sanitization import DROPPED_FIELDS, sanitize

FEATURES = ["age_band", "income", "customer_no", "debt"]


def _manifest(columns: dict[str, str] | None = None, text: bool = False) -> Any:
    inputs: list[dict[str, Any]] = [
        {"name": "x", "datatype": "FP32", "shape": [-1, 4], "feature_names": FEATURES}
    ]
    if text:
        inputs.append({"name": "note", "datatype": "BYTES", "shape": [-1]})
    return parse_manifest(
        "m",
        {
            "runtime": "onnxruntime",
            "inputs": inputs,
            "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]}],
            "feedback": {"enabled": True},
            "payload_logging": {"enabled": True, "purpose": "training", "retention_days": 9},
            "fairness": {"protected": [{"name": "age", "input": "x", "feature": "age_band"}]},
            "learning": {
                "trainer": "pkg.mod:train",
                "columns": columns or {"age_band": "sensitive", "customer_no": "identifier"},
            },
        },
    )


def _row(values: list[Any], label: int | None = 1, **extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "prediction_id": "p1",
        "row": 0,
        "tenant_id": "acme",
        "request_id": "r1",
        "inference_id": None,
        "subject": "ab" * 32,
        "label": label,
        "inputs": {"x": values},
    }
    row.update(extra)
    return row


def test_marked_columns_never_reach_the_trainer_and_the_report_says_so() -> None:
    manifest = _manifest()
    rows = [_row([2, 50_000, 12345, 0.3], 1), _row([0, 20_000, 777, 0.6], 0)]
    data = sanitize(rows, manifest, manifest.learning)
    trainer = data.trainer_inputs(np.arange(len(data)))
    assert np.allclose(trainer["x"], [[50_000, 0.3], [20_000, 0.6]])
    assert data.report["columns_removed"] == {
        "x": {"age_band": "sensitive", "customer_no": "identifier"}
    }
    assert set(DROPPED_FIELDS) >= {"request_id", "subject", "tenant_id", "prediction_id"}
    assert data.report["fields_dropped"] == list(DROPPED_FIELDS)
    # the evaluation keeps the groups of the protected attribute, as audits record them
    assert data.groups == {"age": ["2", "0"]}
    assert data.labels.tolist() == [1, 0]


def test_a_whole_input_can_be_marked() -> None:
    manifest = _manifest(columns={"note": "sensitive"}, text=True)
    rows = [_row([1, 2, 3, 4]) | {"inputs": {"x": [1, 2, 3, 4], "note": ["hi"]}}]
    data = sanitize(rows, manifest, manifest.learning)
    assert set(data.trainer_inputs(np.arange(1))) == {"x"}
    assert data.report["columns_removed"] == {"note": {"*": "sensitive"}}


def test_text_is_redacted_again_and_counted() -> None:
    manifest = _manifest(columns={"age_band": "sensitive"}, text=True)
    rows = [_row([1, 2, 3, 4]) | {"inputs": {"x": [1, 2, 3, 4], "note": ["mail bob@example.com"]}}]
    data = sanitize(rows, manifest, manifest.learning)
    assert data.trainer_inputs(np.arange(1))["note"].tolist() == ["mail [EMAIL]"]
    assert data.report["redactions"] == {"email": 1}


def test_rows_without_consented_inputs_duplicates_and_misfits_are_left_out() -> None:
    manifest = _manifest()
    rows = [
        _row([1, 2, 3, 4], 1),
        _row([1, 2, 3, 4], 1, prediction_id="p2"),  # a retry: same inputs, same label
        _row([1, 2, 3, 4], 0, prediction_id="p3"),  # same inputs, another label: kept
        {**_row([1, 2, 3, 4]), "inputs": None},  # its tenant does not consent
        _row([1, 2, 3], 1),  # not the signature's width
        _row([1, "NaN", 3, 4], 1),  # logged NaN
        _row([1, 2, 3, 4], None),  # no label
    ]
    data = sanitize(rows, manifest, manifest.learning)
    assert len(data) == 2
    assert data.report["rows_left_out"] == {
        "duplicate": 1,
        "no consented inputs": 1,
        "inputs do not fit the signature": 2,
        "no label": 1,
    }
    assert data.report["rows_read"] == 7 and data.report["rows_kept"] == 2


def test_the_digest_names_the_trainers_rows() -> None:
    manifest = _manifest()
    rows = [_row([i, i * 10, i * 100, 0.5], i % 2, prediction_id=f"p{i}") for i in range(6)]
    data = sanitize(rows, manifest, manifest.learning)
    again = sanitize(list(rows), manifest, manifest.learning)
    everything = np.arange(6)
    assert data.digest(everything) == again.digest(everything)
    assert data.digest(everything) != data.digest(np.arange(5))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "label": st.one_of(st.none(), st.integers(0, 3), st.text(max_size=3)),
                "inputs": st.one_of(
                    st.none(),
                    st.fixed_dictionaries(
                        {
                            "x": st.lists(
                                st.one_of(
                                    st.floats(allow_nan=True, allow_infinity=True, width=32),
                                    st.integers(-(10**6), 10**6),
                                    st.text(max_size=4),
                                    st.none(),
                                ),
                                max_size=6,
                            )
                        }
                    ),
                    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                ),
            }
        ),
        max_size=30,
    )
)
def test_any_exported_rows_give_a_consistent_data_set(rows: list[dict[str, Any]]) -> None:
    """Hostile or broken rows are left out and counted; never an exception, never a row
    the signature cannot take."""
    manifest = _manifest()
    data = sanitize(rows, manifest, manifest.learning)
    assert data.report["rows_kept"] + sum(data.report["rows_left_out"].values()) == len(rows)
    assert data.inputs["x"].shape == (len(data), 4)
    assert np.isfinite(data.inputs["x"]).all()
    assert data.trainer_inputs(np.arange(len(data)))["x"].shape == (len(data), 2)
