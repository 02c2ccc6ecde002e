"""Property-based bad input over gRPC: no ModelInferRequest gets INTERNAL (or crashes the
servicer); everything malformed is INVALID_ARGUMENT, NOT_FOUND or RESOURCE_EXHAUSTED."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2

from modelgate.api.grpc.servicer import GrpcInferenceServicer
from modelgate.boot.components import Components
from modelgate.boot.serving import build_components
from modelgate.settings import Settings
from tests.conftest import FIXTURE_MODELS

pytestmark = pytest.mark.asyncio(loop_scope="module")

_ALLOWED = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAVAILABLE,
}


class AbortedError(Exception):
    def __init__(self, code: Any, details: str):
        super().__init__(details)
        self.code = code


class Context:
    """What the servicer uses of a grpc.aio context."""

    def invocation_metadata(self) -> tuple[()]:
        return ()

    async def abort(self, code: Any, details: str, metadata: Any = ()) -> None:
        raise AbortedError(code, details)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def servicer(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[GrpcInferenceServicer]:
    components: Components = build_components(
        Settings(
            model_repository=FIXTURE_MODELS,
            data_dir=tmp_path_factory.mktemp("fuzz"),
            auth="off",
            max_elements=100_000,
        )
    )
    await components.open()  # migrations, as the server runs them first
    await components.start()
    yield GrpcInferenceServicer(components.service, max_elements=100_000)
    await components.close()


_CONTENT_FIELDS = [
    "bool_contents",
    "int_contents",
    "int64_contents",
    "uint_contents",
    "fp32_contents",
    "fp64_contents",
    "bytes_contents",
]
_values = {
    "bool_contents": st.lists(st.booleans(), max_size=8),
    "int_contents": st.lists(st.integers(-(2**31), 2**31 - 1), max_size=8),
    "int64_contents": st.lists(st.integers(-(2**63), 2**63 - 1), max_size=8),
    "uint_contents": st.lists(st.integers(0, 2**32 - 1), max_size=8),
    "fp32_contents": st.lists(st.floats(width=32), max_size=8),
    "fp64_contents": st.lists(st.floats(), max_size=8),
    "bytes_contents": st.lists(st.binary(max_size=8), max_size=8),
}


@st.composite
def requests(draw: st.DrawFn) -> Any:
    message = service_pb2.ModelInferRequest(
        model_name=draw(st.sampled_from(["doubler", "echo-text", "slow-sum", "nope", ""])),
        model_version=draw(st.sampled_from(["", "1", "2", "9", "x"])),
    )
    raw = draw(st.booleans())
    for _ in range(draw(st.integers(0, 3))):
        tensor = message.inputs.add(
            name=draw(st.sampled_from(["x", "text", "y", ""])),
            datatype=draw(
                st.sampled_from(["FP32", "INT32", "BYTES", "BOOL", "FP16", "BF16", "UINT64", "Q"])
            ),
            shape=draw(st.lists(st.integers(-2, 2**33), max_size=3)),
        )
        if raw:
            message.raw_input_contents.append(draw(st.binary(max_size=64)))
        else:
            field = draw(st.sampled_from(_CONTENT_FIELDS))
            getattr(tensor.contents, field).extend(draw(_values[field]))
    for _ in range(draw(st.integers(0, 2))):
        output = message.outputs.add(name=draw(st.sampled_from(["y", "scores", "zz", ""])))
        if draw(st.booleans()):
            output.parameters["classification"].int64_param = draw(st.integers(-3, 5))
    return message


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(message=requests())
async def test_no_infer_request_gets_an_internal_error(
    servicer: GrpcInferenceServicer, message: Any
) -> None:
    code, details = grpc.StatusCode.OK, ""
    try:
        await servicer.ModelInfer(message, Context())
    except AbortedError as exc:
        code, details = exc.code, str(exc)
    assert code is grpc.StatusCode.OK or code in _ALLOWED, (code, details)
