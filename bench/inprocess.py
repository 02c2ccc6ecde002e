"""Where a credit-risk request's time goes inside modelgate, with no server or socket.

``rest``: the ASGI app called in-process, and each layer below it, sequentially (c=1) and 64
at a time. ``grpc``: modelgate's ``ModelInfer`` servicer method against the baseline's
(``bench.baseline_grpc``), called directly without grpc, and the gRPC codec.

Run in a fresh process pinned to one CPU (``python -m bench.inprocess rest|grpc MODELS``);
prints JSON (µs per call).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import SecretStr

from bench.workloads import AUTHORIZATION, BENCH_KEY, CREDIT, credit_json


async def _per_call(
    call: Callable[[], Awaitable[Any]] | Callable[[], Any], seconds: float
) -> float:
    """µs per call, over ``seconds`` after a warm-up (awaits the call if it is a coroutine)."""

    async def once() -> None:
        value = call()
        if asyncio.iscoroutine(value):
            await value

    for _ in range(500):
        await once()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(200):
            await once()
        count += 200
    return (time.perf_counter() - start) / count * 1e6


async def measure(which: str, models: Path, seconds: float) -> dict[str, float]:
    from modelgate.api.rest.codec import decode_infer_request, encode_infer_response
    from modelgate.bootstrap import build_components
    from modelgate.core.signature import validate_inputs as _validate
    from modelgate.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "models"
        repo.mkdir()
        (repo / CREDIT).symlink_to((models / CREDIT).resolve())
        components = build_components(
            Settings(
                model_repository=repo,
                data_dir=Path(tmp) / "d",
                log_level="warning",
                admin_key=SecretStr(BENCH_KEY),
            )
        )
        await components.registry.start()
        # as the server does after start-up: the long-lived objects leave the collector's
        # generations, so full collections do not walk them (docs/benchmarks.md)
        gc.collect()
        gc.freeze()
        try:
            if which == "grpc":
                return await _grpc(components, models, seconds)
            app, service = components.rest_app, components.service
            body = credit_json()
            scope = {
                "type": "http",
                "method": "POST",
                "path": f"/v2/models/{CREDIT}/infer",
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"authorization", AUTHORIZATION.encode()),
                ],
            }

            async def receive() -> dict[str, Any]:
                return {"type": "http.request", "body": body, "more_body": False}

            async def send(_message: Any) -> None:
                return None

            async def sixty_four() -> None:
                await asyncio.gather(*(app(scope, receive, send) for _ in range(64)))

            request = decode_infer_request(CREDIT, None, body, None, 1 << 24)
            response = await service.infer(request)
            loaded = components.registry.get(CREDIT, None)
            assert loaded is not None
            inputs = {"features": np.asarray(request.inputs[0].data)}
            runtime: Any = loaded.runtime
            predictor = getattr(getattr(runtime, "inner", runtime), "predictor", None)
            out = {
                "RestApp, sequential": await _per_call(lambda: app(scope, receive, send), seconds),
                "RestApp, 64 at a time": await _per_call(sixty_four, seconds) / 64,
                "decode_infer_request": await _per_call(
                    lambda: decode_infer_request(CREDIT, None, body, None, 1 << 24), seconds / 2
                ),
                "InferenceService.infer": await _per_call(lambda: service.infer(request), seconds),
                "_validate": await _per_call(
                    lambda: _validate(loaded.manifest, request.inputs), seconds / 2
                ),
                f"{type(runtime).__name__}.infer": await _per_call(
                    lambda: runtime.infer(inputs, None), seconds
                ),
                "encode_infer_response": await _per_call(
                    lambda: encode_infer_response(response, {}), seconds / 2
                ),
            }
            if predictor is not None:
                out["predictor.predict (ONNX Runtime)"] = await _per_call(
                    lambda: predictor.predict(inputs), seconds / 2
                )
            return out
        finally:
            await components.registry.close()
            components.executor.shutdown(wait=False)


async def _grpc(components: Any, models: Path, seconds: float) -> dict[str, float]:
    from bench.baseline_grpc import Servicer
    from bench.workloads import grpc_request, model_files
    from modelgate.api.grpc.codec import decode_infer_request, encode_infer_response
    from modelgate.api.grpc.server import GrpcInferenceServicer

    files = model_files(models, CREDIT)
    ours = GrpcInferenceServicer(components.service, authenticator=components.authenticator)

    class Context:  # what the servicer uses of a grpc.aio context
        def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
            return (("authorization", AUTHORIZATION),)

        def set_trailing_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
            return None

        def peer(self) -> str:
            return "ipv4:127.0.0.1:50000"

        def time_remaining(self) -> float | None:
            return None

        async def abort(self, code: Any, details: str) -> None:
            raise RuntimeError(f"aborted: {code} {details}")

    context = Context()
    theirs = Servicer(str(files.onnx), str(files.version))
    message = grpc_request()
    decoded = decode_infer_request(message, 1 << 24)
    response = await components.service.infer(decoded)

    async def gather(servicer: Any) -> None:
        await asyncio.gather(*(servicer.ModelInfer(message, context) for _ in range(64)))

    return {
        "modelgate ModelInfer, sequential": await _per_call(
            lambda: ours.ModelInfer(message, context), seconds
        ),
        "baseline ModelInfer, sequential": await _per_call(
            lambda: theirs.ModelInfer(message, context), seconds
        ),
        "modelgate ModelInfer, 64 at a time": await _per_call(lambda: gather(ours), seconds) / 64,
        "baseline ModelInfer, 64 at a time": await _per_call(lambda: gather(theirs), seconds) / 64,
        "grpc decode_infer_request": await _per_call(
            lambda: decode_infer_request(message, 1 << 24), seconds / 2
        ),
        "grpc encode_infer_response": await _per_call(
            lambda: encode_infer_response(response), seconds / 2
        ),
    }


def main() -> None:
    import uvloop

    which, models = sys.argv[1], Path(sys.argv[2])
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 2.0
    os.environ.setdefault("MODELGATE_LOG_LEVEL", "warning")
    print(json.dumps(uvloop.run(measure(which, models, seconds))))


if __name__ == "__main__":
    main()
