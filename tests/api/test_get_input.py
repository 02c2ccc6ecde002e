"""The decoder of GET inference's query (``?input=<base64url of the JSON request>``),
by properties: any bytes round-trip through the canonical form and the padded one, and
anything else is refused only with the errors the adapters answer 400 and 413."""

from __future__ import annotations

import base64

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelgate.api.rest.edge import MAX_QUERY_INPUT, decode_query_input
from modelgate.errors import ErrorKind, ModelgateError


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_the_query_decoder_round_trips_any_bytes(raw: bytes) -> None:
    padded = base64.urlsafe_b64encode(raw)
    assert decode_query_input(b"input=" + padded.rstrip(b"=")) == raw
    assert decode_query_input(b"input=" + padded) == raw


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_the_query_decoder_refuses_garbage_only_with_oip_errors(query_string: bytes) -> None:
    try:
        decode_query_input(query_string)
    except ModelgateError as exc:
        kind = exc.kind
    else:
        return
    assert kind in (ErrorKind.INVALID_ARGUMENT, ErrorKind.PAYLOAD_TOO_LARGE)


@settings(max_examples=50, deadline=None)
@given(st.integers(MAX_QUERY_INPUT + 1, MAX_QUERY_INPUT * 2))
def test_an_oversized_input_is_payload_too_large(length: int) -> None:
    with pytest.raises(ModelgateError) as refused:
        decode_query_input(b"input=" + b"A" * length)
    assert refused.value.kind is ErrorKind.PAYLOAD_TOO_LARGE
