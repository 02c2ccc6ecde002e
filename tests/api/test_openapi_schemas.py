"""The REST bodies' schemas (api/openapi/oip.py, v1.py) against the decoders that really read
the bodies: what a decoder accepts, its schema accepts; what the schema refuses, the decoder
refuses. For feedback, whose schema can say everything its decoder checks, the two must agree
both ways. The schemas are taken from the served document, as a client sees them."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from modelgate.api.oip_codec import decode_infer_request
from modelgate.api.openai.embedding_input import embedding_input
from modelgate.api.openapi.document import _schemas
from modelgate.api.openapi.oip import InferenceRequest
from modelgate.api.openapi.v1 import EmbeddingRequest, FeedbackRequest, JobRequest
from modelgate.api.rest.feedback import decode_feedback
from modelgate.api.rest.jobs import JobRoutes
from modelgate.errors import ModelgateError

SCHEMAS = _schemas({InferenceRequest, FeedbackRequest, JobRequest, EmbeddingRequest})


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(
        {"$ref": f"#/components/schemas/{name}", "components": {"schemas": SCHEMAS}}
    )


ONE = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}
TEXT = {"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1], "data": ["a"]}]}
FEEDBACK, INFER = validator("FeedbackRequest"), validator("InferenceRequest")
JOB, EMBEDDING = validator("JobRequest"), validator("EmbeddingRequest")


def decodes(decode: Any, *args: Any) -> bool:
    try:
        decode(*args)
    except ModelgateError:
        return False
    return True


label = st.one_of(st.integers(-2, 2**31 + 1), st.booleans(), st.none(), st.text(max_size=2))
request_id = st.one_of(st.text(min_size=0, max_size=130), st.integers(), st.none())
item = st.dictionaries(
    st.sampled_from(["request_id", "label", "labels", "row", "extra"]),
    st.one_of(label, request_id, st.lists(label, max_size=3), st.integers(-1, 70000)),
    max_size=4,
)
feedback = st.one_of(
    item, st.fixed_dictionaries({"items": st.lists(item, max_size=3)}), st.lists(item), label
)


@settings(max_examples=400, deadline=None)
@given(document=feedback)
def test_feedback_schema_and_decoder_agree_both_ways(document: Any) -> None:
    accepted = decodes(decode_feedback, json.dumps(document).encode())
    assert accepted == FEEDBACK.is_valid(document), document


finite = st.floats(allow_nan=False, allow_infinity=False)
output = st.dictionaries(st.just("name"), st.sampled_from(["y", ""]))
datatype = st.sampled_from(["FP32", "INT64", "BYTES", "BOOL", "FP99", 3])
tensor = st.dictionaries(
    st.sampled_from(["name", "datatype", "shape", "data", "parameters"]),
    st.one_of(
        st.sampled_from(["x", ""]),
        datatype,
        st.lists(st.integers(-1, 3), max_size=2),
        st.lists(
            st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(), st.text()),
            max_size=6,
        ),
        st.none(),
    ),
)
infer = st.one_of(
    st.fixed_dictionaries(
        {"inputs": st.lists(tensor, max_size=2)},
        optional={
            "id": st.one_of(st.text(), st.integers()),
            "outputs": st.lists(st.dictionaries(st.just("name"), st.sampled_from(["y", ""]))),
        },
    ),
    st.lists(tensor),
    st.none(),
)


@settings(max_examples=400, deadline=None)
@given(document=infer)
def test_what_the_oip_decoder_accepts_its_schema_accepts(document: Any) -> None:
    """The schema cannot say that ``data`` fills ``shape``: one direction only."""
    body = json.dumps(document).encode()
    if decodes(decode_infer_request, "m", None, body, None, 1 << 20):
        assert INFER.is_valid(document), document
    if not INFER.is_valid(document):
        assert not decodes(decode_infer_request, "m", None, body, None, 1 << 20), document


@pytest.mark.parametrize(
    ("document", "accepted"),
    [
        ({"model": "m", "request": ONE}, True),
        ({"model": "m", "version": "2", "requests": [TEXT, ONE], "priority": 9}, True),
        ({"model": "m"}, False),
        ({"model": "m", "request": ONE, "requests": [ONE]}, False),
        ({"model": "m", "request": {"inputs": []}}, False),
        ({"model": "", "request": ONE}, False),
        ({"model": "m", "requests": []}, False),
        ({"model": "m", "request": ONE, "unknown": 1}, False),
        ({"model": "m", "request": ONE, "priority": "high"}, False),
    ],
)
def test_job_examples_read_alike(document: dict[str, Any], accepted: bool) -> None:
    """The job decoder (``JobRoutes._spec``, what ``POST /v1/jobs`` runs before the queue)."""
    policy = SimpleNamespace(policy=SimpleNamespace(max_items=10))
    routes = JobRoutes(policy, max_body_bytes=1 << 20, max_elements=1 << 20)  # type: ignore[arg-type]
    assert JOB.is_valid(document) == accepted
    assert decodes(routes._spec, document, None) == accepted


@pytest.mark.parametrize(
    ("document", "accepted"),
    [
        ({"model": "m", "input": "a text"}, True),
        ({"model": "m", "input": ["a", "b"], "encoding_format": "base64"}, True),
        ({"model": "m", "input": []}, False),
        ({"model": "m", "input": "a", "encoding_format": "hex"}, False),
        ({"input": "a"}, False),
        ({"model": "m", "input": "a", "dimensions": "8"}, False),
    ],
)
def test_embedding_examples_read_alike(document: dict[str, Any], accepted: bool) -> None:
    assert EMBEDDING.is_valid(document) == accepted


texts = st.recursive(
    st.one_of(st.text(max_size=3), st.integers(-1, 3), st.none(), st.booleans()),
    lambda inner: st.lists(inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(value=texts)
def test_embedding_input_schema_and_decoder_agree_both_ways(value: Any) -> None:
    """``input``: the forms the embeddings decoder reads (``embedding_input``) are the schema's."""
    accepted = decodes(embedding_input, value)
    assert accepted == EMBEDDING.is_valid({"model": "m", "input": value}), value
