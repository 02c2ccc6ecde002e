"""``grpc``: modelgate's ``ModelInfer`` servicer method against the baseline's
(``bench.baseline_grpc``), called directly without grpc, and the gRPC codec.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from bench.inprocess.timing import Call, Figures
from bench.workloads import AUTHORIZATION, CREDIT


async def measure_grpc(components: Any, models: Path, figures: Figures, secret: str | None) -> None:
    from bench.baseline_grpc import Servicer
    from bench.workloads import grpc_request, model_files
    from modelgate.api.grpc.codec import decode_infer_request, encode_infer_response
    from modelgate.api.grpc.servicer import GrpcInferenceServicer

    files = model_files(models, CREDIT)
    ours = GrpcInferenceServicer(components.service, authenticator=components.authenticator)

    class Context:  # what the servicer uses of a grpc.aio context
        def __init__(self, authorization: str):
            self.metadata = (("authorization", authorization),)

        def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
            return self.metadata

        def set_trailing_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
            return None

        def peer(self) -> str:
            return "ipv4:127.0.0.1:50000"

        def time_remaining(self) -> float | None:
            return None

        async def abort(self, code: Any, details: str) -> None:
            raise RuntimeError(f"aborted: {code} {details}")

    context = Context(AUTHORIZATION)
    tenant_context = Context(f"Bearer {secret}") if secret else None
    theirs = Servicer(str(files.onnx), str(files.version))
    message = grpc_request()
    decoded = decode_infer_request(message, 1 << 24)
    response = await components.service.infer(decoded)

    def ours_with(ctx: Context) -> Call:
        return lambda: ours.ModelInfer(message, ctx)

    def gather(servicer: Any, ctx: Context) -> Call:
        async def run() -> None:
            await asyncio.gather(*(servicer.ModelInfer(message, ctx) for _ in range(64)))

        return run

    await figures.both(
        "modelgate ModelInfer, sequential",
        ours_with(context),
        ours_with(tenant_context) if tenant_context else None,
    )
    await figures.one(
        "baseline ModelInfer, sequential", lambda: theirs.ModelInfer(message, context)
    )
    await figures.both(
        "modelgate ModelInfer, 64 at a time",
        gather(ours, context),
        gather(ours, tenant_context) if tenant_context else None,
        per=64,
    )
    await figures.one("baseline ModelInfer, 64 at a time", gather(theirs, context), per=64)
    await figures.one(
        "grpc decode_infer_request", lambda: decode_infer_request(message, 1 << 24), 0.5
    )
    await figures.one("grpc encode_infer_response", lambda: encode_infer_response(response), 0.5)
