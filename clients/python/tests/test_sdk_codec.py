"""The tensor codec, property-based: any array of any OIP datatype comes back as it was
sent, through ``MockTransport`` (which reads requests and writes answers as the server does),
in binary and in JSON."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from modelgate_client import Client
from modelgate_client.testing import MockTransport

NUMERIC = ["?", "u1", "<u2", "<u4", "<u8", "i1", "<i2", "<i4", "<i8", "<f2", "<f4", "<f8"]
SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)


@st.composite
def arrays(draw: st.DrawFn, *, finite: bool) -> np.ndarray[Any, Any]:
    dtype = draw(st.sampled_from(NUMERIC))
    elements = None
    if dtype.lstrip("<").startswith("f"):
        elements = hnp.from_dtype(np.dtype(dtype), allow_nan=not finite, allow_infinity=not finite)
    return draw(hnp.arrays(np.dtype(dtype), SHAPES, elements=elements))


@st.composite
def byte_arrays(draw: st.DrawFn, *, text: bool) -> np.ndarray[Any, Any]:
    shape = draw(SHAPES)
    size = int(np.prod(shape))
    items = draw(
        st.lists(
            st.text(max_size=8).map(str.encode) if text else st.binary(max_size=8),
            min_size=size,
            max_size=size,
        )
    )
    array = np.empty(size, dtype=object)
    array[:] = items
    return array.reshape(shape)


def _echo() -> Client:
    transport = MockTransport()
    transport.add_model("echo", lambda inputs: dict(inputs))
    return Client("http://modelgate.test", transport=transport)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a=arrays(finite=False), b=byte_arrays(text=False))
def test_binary_round_trip(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> None:
    with _echo() as client:
        got = client.infer("echo", {"a": a, "b": b})
    assert got["a"].dtype == a.dtype.newbyteorder("=") and got["a"].shape == a.shape
    np.testing.assert_array_equal(got["a"], a)
    assert got["b"].shape == b.shape and got["b"].tolist() == b.tolist()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a=arrays(finite=True), b=byte_arrays(text=True))
def test_json_round_trip(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> None:
    with _echo() as client:
        got = client.infer("echo", {"a": a, "b": b}, binary=False)
    assert got["a"].dtype == a.dtype.newbyteorder("=") and got["a"].shape == a.shape
    np.testing.assert_array_equal(got["a"], a)
    assert got["b"].shape == b.shape and got["b"].tolist() == b.tolist()


def test_json_refuses_nan_with_a_clear_error() -> None:
    with _echo() as client, pytest.raises(ValueError, match="binary=True"):
        client.infer("echo", {"a": np.array([np.nan], np.float32)}, binary=False)
