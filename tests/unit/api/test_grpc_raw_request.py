"""Reading the model a serialized ``ModelInferRequest`` names without decoding it
(api/grpc/raw_request.py): what it reads always agrees with the decoded message."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2

from modelgate.api.grpc.raw_request import decode_message, model_of
from modelgate.errors import ErrorKind, ModelgateError


@settings(max_examples=300, deadline=None)
@given(
    name=st.text(max_size=300),
    version=st.text(max_size=20),
    request_id=st.text(max_size=20),
    raw=st.lists(st.binary(max_size=64), max_size=3),
)
def test_the_model_read_from_the_bytes_is_the_decoded_messages(
    name: str, version: str, request_id: str, raw: list[bytes]
) -> None:
    message = service_pb2.ModelInferRequest(model_name=name, model_version=version, id=request_id)
    message.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    message.raw_input_contents.extend(raw)
    serialized = message.SerializeToString()
    read = model_of(serialized)
    if name and len(name.encode()) <= 1024:
        assert read == (name, version or None)
    else:  # an empty name is not written, a long one not read: the decoder says
        assert read is None
    assert decode_message(serialized).model_name == name


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_are_read_or_left_to_the_decoder_without_an_error(data: bytes) -> None:
    read = model_of(data)  # never raises
    assert read is None or isinstance(read[0], str)
    kind = None
    try:
        decode_message(data)
    except ModelgateError as exc:  # whatever is not a message: INVALID_ARGUMENT
        kind = exc.kind
    assert kind in (None, ErrorKind.INVALID_ARGUMENT)


def test_a_name_over_the_read_limit_is_left_to_the_decoder() -> None:
    message = service_pb2.ModelInferRequest(model_name="m" * 5000)
    assert model_of(message.SerializeToString()) is None


def test_bytes_that_are_no_message_are_invalid_argument() -> None:
    with pytest.raises(ModelgateError) as refused:
        decode_message(b"\x0a\xff\xff\xff\xff\xff")
    assert refused.value.kind is ErrorKind.INVALID_ARGUMENT
