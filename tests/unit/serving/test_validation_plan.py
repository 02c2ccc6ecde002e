"""Each loaded version checks its inputs by a plan worked out once (issue 11). These
properties hold the plan to the per-request function it replaced, kept here as the oracle:
on random signatures and random requests (unknown, repeated and missing inputs, wrong
datatypes, ranks and sizes, disagreeing batch sizes, empty batches, too many rows, NaN and
Infinity, values near the float limit), both accept the same requests with the same arrays and rows,
or refuse them with the same message."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from modelgate.core.serving.manifest import ModelManifest, parse_manifest
from modelgate.core.serving.request_size import check_rows, check_texts
from modelgate.core.serving.tensors import Tensor
from modelgate.core.serving.validation_plan import ValidationPlan
from modelgate.errors import ModelgateError, invalid


def _old_validate(
    manifest: ModelManifest, tensors: list[Tensor]
) -> tuple[dict[str, np.ndarray[Any, Any]], int]:
    """signature.validate_inputs as it was before the plan, verbatim."""
    inputs: dict[str, np.ndarray[Any, Any]] = {}
    rows = -1
    texts = 0
    max_rows = manifest.limits.max_rows or 0
    for tensor in tensors:
        spec = manifest.input(tensor.name)
        if spec is None:
            expected = ", ".join(s.name for s in manifest.inputs)
            raise invalid(
                f"unexpected input '{tensor.name}' for model '{manifest.name}' "
                f"(it takes: {expected})"
            )
        if tensor.name in inputs:
            raise invalid(f"input '{tensor.name}' is given twice")
        if tensor.datatype != spec.datatype:
            raise invalid(
                f"input '{tensor.name}' has datatype {tensor.datatype}, "
                f"model '{manifest.name}' expects {spec.datatype}"
            )
        shape = tensor.data.shape
        if len(shape) != len(spec.shape) or any(
            want != -1 and got != want for got, want in zip(shape, spec.shape, strict=True)
        ):
            raise invalid(
                f"input '{tensor.name}' has shape {list(shape)}, model "
                f"'{manifest.name}' expects {list(spec.shape)}"
            )
        if shape:
            if rows not in (-1, shape[0]):
                raise invalid("inputs disagree on the batch size (first dimension)")
            rows = shape[0]
            if rows > max_rows:  # before any pass over the data
                check_rows(manifest, rows)
        if tensor.datatype == "BYTES":
            texts = check_texts(manifest, tensor.name, tensor.data, texts)
        if (
            not spec.allow_nonfinite
            and tensor.data.dtype.kind == "f"
            and not bool(np.isfinite(tensor.data).all())
        ):
            raise invalid(
                f"input '{tensor.name}' holds NaN or Infinity, which model "
                f"'{manifest.name}' does not accept"
            )
        inputs[tensor.name] = tensor.data
    if len(inputs) != len(manifest.inputs):
        missing = [s.name for s in manifest.inputs if s.name not in inputs]
        raise invalid(f"missing input(s) {', '.join(missing)} for model '{manifest.name}'")
    if rows == 0:
        raise invalid("the batch is empty (first dimension is 0)")
    return inputs, max(rows, 1)


_DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "BYTES": object}
_dims = st.one_of(st.just(-1), st.integers(1, 3))
_values = st.sampled_from([0.0, 1.5, -2.0, np.nan, np.inf, -np.inf, 3e38, -3e38, 1e308])


@st.composite
def _signature(draw: st.DrawFn) -> ModelManifest:
    names = draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3, unique=True))
    inputs = [
        {
            "name": name,
            "datatype": draw(st.sampled_from(sorted(_DTYPES))),
            "shape": draw(st.lists(_dims, min_size=0, max_size=3)),
            "allow_nonfinite": draw(st.booleans()),
        }
        for name in names
    ]
    data: dict[str, Any] = {
        "runtime": "python",
        "inputs": inputs,
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1]}],
    }
    limits = draw(st.one_of(st.none(), st.integers(1, 3)))
    if limits is not None:
        data["limits"] = {"max_rows": limits}
    return parse_manifest("m", data)


@st.composite
def _request(draw: st.DrawFn, manifest: ModelManifest) -> list[Tensor]:
    names = [s.name for s in manifest.inputs]
    chosen = draw(st.lists(st.sampled_from([*names, "z"]), min_size=0, max_size=4))
    tensors = []
    for name in chosen:
        spec = manifest.input(name)
        datatype = (
            spec.datatype
            if spec is not None and draw(st.integers(0, 4))
            else draw(st.sampled_from(sorted(_DTYPES)))
        )
        if spec is not None and draw(st.integers(0, 3)):
            shape = [draw(st.integers(0, 4)) if d == -1 else d for d in spec.shape]
            if shape and draw(st.booleans()):  # one dimension off, as often as not
                shape[draw(st.integers(0, len(shape) - 1))] = draw(st.integers(0, 4))
        else:
            shape = draw(st.lists(st.integers(0, 4), min_size=0, max_size=3))
        count = int(np.prod(shape)) if shape else 1
        if datatype == "BYTES":
            array = np.empty(count, dtype=object)
            for i in range(count):
                array[i] = b"t" * draw(st.integers(0, 3))
        else:
            values = draw(st.lists(_values, min_size=count, max_size=count))
            with np.errstate(over="ignore", invalid="ignore"):
                array = np.array(values, dtype=np.float64)
                if datatype == "INT64":
                    array = np.nan_to_num(array, posinf=7, neginf=-7).clip(-9, 9)
                array = array.astype(_DTYPES[datatype])
        tensors.append(Tensor(name, datatype, array.reshape(shape)))
    return tensors


def _outcome(validate: Any, manifest: ModelManifest, tensors: list[Tensor]) -> tuple[str, Any]:
    try:
        inputs, rows = validate(manifest, tensors)
    except ModelgateError as exc:
        return "refused", (exc.kind, exc.message)
    return "accepted", ({k: id(v) for k, v in inputs.items()}, list(inputs), rows)


@settings(max_examples=600, deadline=None)
@given(st.data())
def test_the_plan_decides_as_the_old_check_did(data: st.DataObject) -> None:
    manifest = data.draw(_signature())
    tensors = data.draw(_request(manifest))
    plan = ValidationPlan(manifest)
    assert _outcome(lambda _m, t: plan.validate(t), manifest, tensors) == _outcome(
        _old_validate, manifest, tensors
    )
